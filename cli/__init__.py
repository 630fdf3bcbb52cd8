"""The ``mnist-tfx`` command line (``python -m cli``): ``fetch``, ``convert``, ``ingest``,
``run``, ``summary``, ``versions``, ``reproduce``, ``rollback``, ``serve`` and ``predict``,
one module each in ``cli/commands/``. It only parses, prints and maps errors to exit
codes; the work is in ``ingest``, ``pipeline`` and ``serving``.

Exit codes (``cli/errors.py``; docs/reliability.md#exit-codes):

- 0 success;
- 1 an unexpected failure (a bug, a full disk, a permission lost midway), or a model
  that failed verification: one line ``error: <Type>: message (run with -v for the
  traceback)``, the traceback only with ``-v``;
- 2 a mistake of the user's: a flag value, a path, a name (``UsageError``, found before
  any work starts and reported as ``error: --flag VALUE: what was expected``), or bad
  input data (a source file, a record, drift found by the ExampleValidator); nothing
  downstream written;
- 3 the Evaluator did not bless the model (nothing pushed);
- 4 another run is using the same ML Metadata store (nothing done);
- 5 ``versions --max-age-days``: the served model is older than allowed, or nothing is
  served;
- 6 ``monitor``: the logged requests of the window are skewed from the training data or
  drifted from the previous window beyond the bounds;
- 7 ``monitor``: no logged request in the window (or no log file yet);
- 130 interrupted (Ctrl-C).

Importing it selects Keras 2 (``tf_keras``) and quiets TensorFlow's C++ logs before
TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
