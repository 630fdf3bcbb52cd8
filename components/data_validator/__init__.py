"""The ExampleValidator that stops the run: TFDV anomalies against the latest blessed
model's schema and drift of the training data from its training data."""
