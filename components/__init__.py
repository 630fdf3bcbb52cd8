"""Our TFX components, one folder each, component and executor side by side as in
TFX's own ``tfx/components/<name>/``:

- ``example_gen/``: the executor of TFX's FileBasedExampleGen that copies whole
  shards and checks every record;
- ``served_model/``: the resolver strategy that finds the model the serving base path
  serves now (after a rollback, the restored one), the Evaluator's baseline and the
  data validator's reference;
- ``data_validator/``: the ExampleValidator that stops the run on anomalies and drift
  (component, executor, and the data profile it compares);
- ``pusher/``: the executor of TFX's Pusher that publishes a verified version atomically;
- ``evaluation_report/``: the component that writes each run's HTML report (the page
  itself is the ``report`` package).

Importing it selects Keras 2 (``tf_keras``) before TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TF 2.16 leaves oneDNN off on non-Intel CPUs; on this AMD machine it trains 1.5x faster.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def __getattr__(name: str):
    # Kubeflow's container imports the report's artifact type by its TYPE_NAME,
    # components.EvaluationReportArtifact; lazily, so the package stays light.
    if name == "EvaluationReportArtifact":
        from components.evaluation_report.component import EvaluationReportArtifact

        return EvaluationReportArtifact
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
