"""Data and component code of our own: dataset facts, IDX reading, fetching and
conversion to TFRecords, and the custom TFX executors (atomic Pusher).

Importing it selects Keras 2 (``tf_keras``) before TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TF 2.16 leaves oneDNN off on non-Intel CPUs; on this AMD machine it trains 1.5x faster.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
