"""Pipeline wiring (``create_pipeline``), its runners and the ``mnist-tfx`` CLI.

Nothing here imports the model code: the Transform and Trainer components load
``trainer`` by module path. Importing this package selects Keras 2 (``tf_keras``)
before TensorFlow loads, as TFX 1.16's components require.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TF 2.16 leaves oneDNN off on non-Intel CPUs; on this AMD machine it trains 1.5x faster.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
