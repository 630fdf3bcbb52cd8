"""Tests of the model_fns' augmentation: random shifts in TRAIN mode only, so EVAL
and PREDICT (and so the export and the Evaluator) stay deterministic."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.hparams import HParams
from trainer.model import build_model
from trainer.model_fn import IMAGE_KEY, MODEL_FNS, ModeKeys, cnn_model_fn


@pytest.fixture(scope="module")
def images(mnist_train) -> tf.Tensor:
    pictures, _ = mnist_train
    return tf.constant(pictures[:20].astype(np.float32)[..., None] / np.float32(255))


@pytest.fixture(scope="module")
def augmented_model():
    tf.random.set_seed(1)
    return build_model(cnn_model_fn, HParams(augment_shift=2, dropout_rate=0.0).to_params())


def test_eval_and_predict_are_deterministic_with_augmentation(augmented_model, images):
    """Two EVAL runs and two PREDICT calls on the same images give identical outputs."""
    features = {IMAGE_KEY: images}
    labels = tf.zeros([20], tf.int64)
    first = augmented_model.run_model_fn(features, labels, ModeKeys.EVAL)
    second = augmented_model.run_model_fn(features, labels, ModeKeys.EVAL)
    np.testing.assert_array_equal(
        first.predictions["probabilities"].numpy(), second.predictions["probabilities"].numpy()
    )
    assert float(first.loss) == float(second.loss)
    predicted = augmented_model(features, training=False)["probabilities"].numpy()
    np.testing.assert_array_equal(predicted, first.predictions["probabilities"].numpy())


def test_train_mode_sees_shifted_images(augmented_model, images):
    """With dropout off, TRAIN-mode predictions differ between two calls and from
    PREDICT's only because the input was shifted."""
    features = {IMAGE_KEY: images}
    labels = tf.zeros([20], tf.int64)
    plain = augmented_model(features, training=False)["probabilities"].numpy()
    first = augmented_model.run_model_fn(features, labels, ModeKeys.TRAIN).predictions
    second = augmented_model.run_model_fn(features, labels, ModeKeys.TRAIN).predictions
    assert not np.allclose(first["probabilities"].numpy(), plain)
    assert not np.allclose(first["probabilities"].numpy(), second["probabilities"].numpy())


def test_no_augmentation_layer_by_default():
    """The defaults of every model train on the images as given (no augment layer)."""
    for name, model_fn in MODEL_FNS.items():
        model = build_model(model_fn, HParams(model=name, dropout_rate=0.0).to_params())
        assert "augment_shift" not in model.fn_objects, name
