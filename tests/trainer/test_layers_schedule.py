"""Tests of trainer/layers.py's learning-rate schedule (warm-up, then cosine decay)
and of its random-shift augmentation."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer import layers

BASE = {"optimizer": "adam", "learning_rate": 2e-3, "total_steps": 1000}


def cosine(step: int, total: int, start: int, peak: float, final: float) -> float:
    """The expected cosine value after ``start`` warm-up steps."""
    fraction = min(step - start, total - start) / (total - start)
    return peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * fraction)))


def test_warmup_then_cosine_values():
    """10 % warm-up: 0 at step 0, linear to the peak at step 100, cosine to 5 % at the
    last step, and held there after."""
    schedule = layers.learning_rate_schedule(
        {**BASE, "warmup_fraction": 0.1, "final_learning_rate_fraction": 0.05}
    )
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    expected = {
        0: 0.0,
        50: 1e-3,
        100: 2e-3,
        550: cosine(550, 1000, 100, 2e-3, 0.05),
        1000: 1e-4,
        5000: 1e-4,
    }
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-9), step
    assert float(schedule(550)) == pytest.approx(2e-3 * 0.525)


def test_no_warmup_is_the_plain_cosine():
    schedule = layers.learning_rate_schedule({**BASE, "final_learning_rate_fraction": 0.0})
    assert float(schedule(0)) == pytest.approx(2e-3)
    assert float(schedule(500)) == pytest.approx(1e-3)
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-12)


def test_warmup_without_decay_holds_the_peak():
    schedule = layers.learning_rate_schedule(
        {**BASE, "warmup_fraction": 0.2, "final_learning_rate_fraction": 1.0}
    )
    assert [round(float(schedule(s)), 9) for s in (0, 100, 200, 600, 1000)] == [
        0.0,
        1e-3,
        2e-3,
        2e-3,
        2e-3,
    ]


@pytest.mark.parametrize(
    "params",
    [
        {**BASE, "final_learning_rate_fraction": 1.0},
        {**BASE, "total_steps": 0, "warmup_fraction": 0.1, "final_learning_rate_fraction": 0.05},
    ],
)
def test_constant_rate_without_schedule_or_step_count(params):
    assert layers.learning_rate_schedule(params) == 2e-3


def test_optimizer_uses_the_schedule():
    with layers.layer_scope({}):
        optimizer = layers.optimizer({**BASE, "warmup_fraction": 0.1})
    assert float(optimizer._learning_rate(100)) == pytest.approx(2e-3)
    assert float(optimizer._learning_rate(0)) == 0.0


def test_random_shift_only_in_training():
    """In training each image moves by whole pixels, at most 2 each way, the border
    filled with 0, and not every image the same way; outside training it is the input."""
    tf.random.set_seed(3)
    image = np.zeros([28, 28, 1], np.float32)
    image[12:16, 12:16] = 1.0  # a 4x4 square in the middle
    batch = tf.constant(np.repeat(image[None], 64, axis=0))
    with layers.layer_scope({}):
        same = layers.random_shift(batch, 2, training=False, name="shift")
        shifted = layers.random_shift(batch, 2, training=True, name="shift").numpy()
    np.testing.assert_array_equal(same.numpy(), batch.numpy())
    offsets = set()
    for picture in shifted:
        assert set(np.unique(picture)) <= {0.0, 1.0}  # nearest: no blending
        assert picture.sum() == 16.0  # moved, not cut or stretched
        rows, cols = np.nonzero(picture[..., 0])
        offsets.add((rows.min() - 12, cols.min() - 12))
    assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in offsets)
    assert len(offsets) > 5


def test_random_shift_of_zero_is_the_identity():
    batch = tf.ones([2, 28, 28, 1])
    store: dict = {}
    with layers.layer_scope(store):
        assert layers.random_shift(batch, 0, training=True, name="shift") is batch
    assert store == {}
