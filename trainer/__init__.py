"""User code of the pipeline: the Transform ``preprocessing_fn``, the Estimator-style
``model_fn``, the code that runs it on tf_keras, the input functions, the serving
export and the Trainer's ``run_fn``.

The pipeline wiring (``pipeline/``) never imports this package; TFX components
load it by module path. Importing it selects Keras 2 (``tf_keras``), which TFT and
TFMA 1.16 expect, before TensorFlow is imported.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TF 2.16 leaves oneDNN off on non-Intel CPUs; on this AMD machine it trains 1.5x faster.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
