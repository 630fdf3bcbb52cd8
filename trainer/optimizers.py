"""Adam with TensorFlow's fused update kernel.

tf_keras's ``Adam`` updates each variable with separate element-wise ops (a
subtraction, multiplications, a square, a square root, a division and three
assignments), each a pass over the variable's memory. Keras fuses them with XLA
only when a GPU is present, so on CPU every step makes about ten passes over each
variable and its two slots. The CNN's dense layer holds 3.2 of its 3.3 million
weights; profiled on 2026-11-27 (2 cores, mixed bfloat16), those ops took about
28 % of a training step's compute.

``ResourceApplyAdam`` is the kernel TF1's ``tf.train.AdamOptimizer`` ran: one
multi-threaded pass updates the variable and both slots with the same arithmetic
(``m += (g - m)(1 - beta1)``, ``v += (g^2 - v)(1 - beta2)``,
``var -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + epsilon)``), so the
weights match tf_keras's Adam to float rounding (tests/trainer/test_optimizers.py).
Sparse gradients, AMSGrad and adaptive epsilon keep tf_keras's own update.
``make bench`` shows the step time it saves.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose dense update is one ``ResourceApplyAdam`` op."""

    def update_step(self, gradient: tf.Tensor, variable: tf.Variable) -> None:
        if isinstance(gradient, tf.IndexedSlices) or self.amsgrad or self.adaptive_epsilon:
            super().update_step(gradient, variable)
            return
        dtype = variable.dtype
        # Adam's step count t starts at 1 for the first update.
        step = tf.cast(self.iterations + 1, dtype)
        index = self._index_dict[self._var_key(variable)]
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(self.learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )
