"""Data and component code of our own: dataset facts, IDX reading, fetching and
conversion to TFRecords, and the custom TFX executors (atomic Pusher).

Importing it selects Keras 2 (``tf_keras``) before TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
