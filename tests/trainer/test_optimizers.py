"""FusedAdam (trainer/optimizers.py) against tf_keras's own Adam."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer.optimizers import FusedAdam

SHAPES = [(64, 32), (32,), (5, 5, 1, 8)]


def _run(optimizer: keras.optimizers.Optimizer, steps: int) -> list[np.ndarray]:
    """``steps`` updates of three variables with the same pseudo-random gradients."""
    rng = np.random.default_rng(3)
    variables = [tf.Variable(rng.normal(size=shape).astype(np.float32)) for shape in SHAPES]
    for _ in range(steps):
        gradients = [tf.constant(rng.normal(size=shape).astype(np.float32)) for shape in SHAPES]
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
    return [variable.numpy() for variable in variables]


@pytest.mark.parametrize(
    "learning_rate",
    [1e-2, keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=20, alpha=0.05)],
    ids=["constant", "cosine"],
)
def test_fused_adam_matches_keras_adam(learning_rate):
    """Twenty steps give the weights tf_keras's Adam gives, to float rounding, and move
    them by far more than that (so a wrong step count or bias correction would show)."""
    rng = np.random.default_rng(3)
    start = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    expected = _run(keras.optimizers.Adam(learning_rate), 20)
    fused = FusedAdam(learning_rate)
    found = _run(fused, 20)
    assert int(fused.iterations) == 20
    for want, got, before in zip(expected, found, start, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
        assert np.abs(want - before).max() > 0.05


def test_fused_adam_first_step_is_learning_rate_sized():
    """Adam's first step moves every weight by lr * sign(gradient) (bias-corrected m / sqrt(v)
    is +-1), the textbook property, not a figure computed the same way."""
    variable = tf.Variable([1.0, -2.0, 3.0])
    FusedAdam(0.1).apply_gradients([(tf.constant([0.5, -4.0, 0.25]), variable)])
    np.testing.assert_allclose(variable.numpy(), [0.9, -1.9, 2.9], atol=1e-4)


def test_fused_adam_under_mixed_bfloat16():
    """Under the mixed_bfloat16 policy (bf16 training) the float32 variables behind
    Keras's autocast wrappers are updated in place."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = keras.layers.Dense(4)
        layer.build((None, 3))
        optimizer = FusedAdam(0.1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(tf.ones([2, 3])), tf.float32))
        kernel_before = layer.kernel.numpy()
        gradients = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(gradients, layer.trainable_variables, strict=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert layer.kernel.dtype == tf.float32
    # d loss / d kernel = 2 (two rows of ones) > 0, so each weight drops by lr.
    np.testing.assert_allclose(layer.kernel.numpy(), kernel_before - 0.1, atol=1e-4)


def test_fused_adam_sparse_gradients_use_keras_update():
    """An embedding's IndexedSlices gradient takes tf_keras's sparse path: only the
    looked-up rows move."""
    table = tf.Variable(np.ones((4, 2), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, [1, 3]))
    (gradient,) = tape.gradient(loss, [table])
    assert isinstance(gradient, tf.IndexedSlices)
    FusedAdam(0.1).apply_gradients([(gradient, table)])
    np.testing.assert_allclose(table.numpy()[:, 0], [1.0, 0.9, 1.0, 0.9], atol=1e-4)
