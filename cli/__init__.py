"""The ``mnist-tfx`` command line (``python -m cli``): ``fetch``, ``convert``, ``ingest``,
``run``, ``summary``, ``versions``, ``reproduce``, ``rollback``, ``serve`` and ``predict``,
one module each in ``cli/commands/``. It only parses, prints and maps errors to exit
codes; the work is in ``ingest``, ``pipeline`` and ``serving``.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage or bad input data
(nothing downstream written); 3 the Evaluator did not bless the model (nothing pushed);
4 another run is using the same ML Metadata store (nothing done).

Importing it selects Keras 2 (``tf_keras``) and quiets TensorFlow's C++ logs before
TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
