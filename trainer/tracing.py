"""AutoGraph leaves tf_keras's own code as written, as it leaves TensorFlow's.

Tracing a ``tf.function`` runs AutoGraph over every Python function the traced code
calls, except those of modules its conversion rules exempt
(``tensorflow/python/autograph/core/config.py``): TensorFlow itself and, among
others, the ``keras`` package. Keras 2 now ships as ``tf_keras``, which those rules
do not name, so every tf_keras method a traced train step touched (each layer's
``call``, the metrics' ``update_state``, the optimizer's update, the autocast
variables of ``mixed_bfloat16``, the Transform layer of the input pipeline) was
parsed from source, rewritten and compiled again in each process: 10 of the
Trainer's 74 s in a full ``make run`` (py-spy, 2026-11-28), on one core while the
other idled, and a warning that AutoGraph "could not transform
create_autocast_variable".

``exempt_tf_keras()`` adds the rule TensorFlow has for ``keras`` for ``tf_keras``.
tf_keras is written to run in graph mode unconverted (it was exempt as
``tensorflow.python.keras`` and then as ``keras``), and the graphs are the same:
the same seed trains the same weights with and without the rule. Code outside
tf_keras is converted as before, so a model_fn or a custom layer of this project
or of a user may still use Python ``if``/``for`` on tensors.
"""

from __future__ import annotations

from tensorflow.python.autograph.core import config as autograph_config
from tensorflow.python.autograph.core import config_lib

TF_KERAS = "tf_keras"


def exempt_tf_keras() -> bool:
    """Add AutoGraph's DoNotConvert rule for ``tf_keras`` unless a rule already
    decides for it. Process-wide and idempotent; True when this call added it."""
    rules = autograph_config.CONVERSION_RULES
    if any(rule.matches(TF_KERAS) for rule in rules):
        return False
    autograph_config.CONVERSION_RULES = (*rules, config_lib.DoNotConvert(TF_KERAS))
    return True
