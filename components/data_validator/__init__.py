"""The ExampleValidator that stops the run: TFDV anomalies against the baseline
model's schema and drift of the training data from its training data. The baseline
is the model the serving base path serves (``components/served_model/``; the latest
blessed model on Kubeflow)."""
