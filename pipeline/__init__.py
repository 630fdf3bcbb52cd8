"""Pipeline wiring (``create_pipeline`` and its typed settings), its runners (local,
Airflow, Kubeflow), run configuration, ML Metadata access, run summaries and lineage.

The wiring refers to the model code by module path (the Transform and Trainer load
``trainer.transform`` / ``trainer.task``); it reads only the hyperparameters and the
code fingerprint from ``trainer``. The command line is the ``cli`` package.

Importing this package selects Keras 2 (``tf_keras``) before TensorFlow loads, as
TFX 1.16's components require.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TF 2.16 leaves oneDNN off on non-Intel CPUs; on this AMD machine it trains 1.5x faster.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
