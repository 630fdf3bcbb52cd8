"""Debugging the model on a single example (docs/ml-test-score.md, Infra 5).

When one image is misclassified, a developer has to be able to follow it through the
model layer by layer, and follow one training step on it. ``cnn_model_fn`` keeps its
layers by name in ``ModelFnModel.fn_objects``, so each step can be run on its own and
inspected; this test does that for one real fixture image and checks that the steps,
chained by hand, give exactly what the model predicts, and that one training step on
that image has a finite gradient for every variable and lowers its loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from trainer import train
from trainer.hparams import HParams
from trainer.model import build_model
from trainer.model_fn import IMAGE_KEY, ModeKeys, cnn_model_fn

pytestmark = pytest.mark.slow  # the module builds a CNN once

# cnn_model_fn's layers in order, with the shape each gives for one image.
STEPS = [
    ("conv1", (1, 28, 28, 32)),
    ("pool1", (1, 14, 14, 32)),
    ("conv2", (1, 14, 14, 64)),
    ("pool2", (1, 7, 7, 64)),
    ("flatten", (1, 3136)),
    ("dense", (1, 1024)),
    ("dropout", (1, 1024)),
    ("logits", (1, 10)),
]


@pytest.fixture(scope="module")
def model_and_image(mnist_train):
    """The CNN as built with a fixed seed (weights as training starts; the steps work
    the same on trained weights) and one real fixture image with its label."""
    was_deterministic = tf_config.is_op_determinism_enabled()
    images, labels = mnist_train
    pixels = images.astype(np.float32)[..., None] / np.float32(255)
    train.set_seed(3)
    model = build_model(cnn_model_fn, HParams(seed=3).to_params())
    yield model, pixels[200:201], np.array([labels[200]], np.int64)
    if not was_deterministic:
        tf_config.disable_op_determinism()


def test_each_layer_of_one_prediction_can_be_inspected(model_and_image):
    """Running the named layers one by one on one image: every intermediate has the
    expected shape, ReLU outputs are non-negative, pooling keeps the maximum of each 2x2
    block, and the chained result equals the model's own PREDICT output."""
    model, image, _ = model_and_image
    layers = model.fn_objects
    value = tf.constant(image)
    seen = {}
    for name, shape in STEPS:
        if name == "flatten":
            value = tf.reshape(value, [1, -1])
        elif name == "dropout":
            value = layers[name](value, training=False)
        else:
            value = layers[name](value)
        assert tuple(value.shape) == shape, name
        assert np.isfinite(value.numpy()).all(), name
        seen[name] = value.numpy()

    for name in ("conv1", "conv2", "dense"):
        assert seen[name].min() >= 0.0, f"{name} is a ReLU layer"
    block_max = seen["conv1"].reshape(1, 14, 2, 14, 2, 32).max(axis=(2, 4))
    np.testing.assert_array_equal(seen["pool1"], block_max)

    kernel, bias = layers["conv1"].kernel, layers["conv1"].bias
    by_hand = tf.nn.relu(tf.nn.conv2d(image, kernel, 1, "SAME") + bias).numpy()
    np.testing.assert_allclose(seen["conv1"], by_hand, rtol=1e-5, atol=1e-6)

    predicted = model({IMAGE_KEY: tf.constant(image)})
    probabilities = tf.nn.softmax(seen["logits"]).numpy()
    np.testing.assert_allclose(predicted["probabilities"].numpy(), probabilities, atol=1e-6)
    assert int(predicted["classes"][0]) == int(seen["logits"].argmax())


def test_one_training_step_on_one_example_can_be_followed(model_and_image):
    """The TRAIN mode on that image alone: a scalar loss, a finite and not all-zero
    gradient for each of the 8 variables, and a small step along it lowers the loss."""
    model, image, label = model_and_image
    features = {IMAGE_KEY: tf.constant(image)}
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        # The EVAL mode's loss: the TRAIN mode's without dropout, so it is repeatable.
        loss = model.run_model_fn(features, tf.constant(label), ModeKeys.EVAL).loss
    gradients = tape.gradient(loss, variables)
    assert loss.shape == () and np.isfinite(loss.numpy())
    assert len(gradients) == len(variables) == 8
    for variable, gradient in zip(variables, gradients, strict=True):
        assert np.isfinite(gradient.numpy()).all(), variable.name
        assert np.abs(gradient.numpy()).max() > 0, variable.name

    originals = [v.numpy() for v in variables]
    try:
        for variable, gradient in zip(variables, gradients, strict=True):
            variable.assign_sub(1e-3 * gradient)
        after = model.run_model_fn(features, tf.constant(label), ModeKeys.EVAL).loss
        assert float(after) < float(loss)
    finally:
        for variable, original in zip(variables, originals, strict=True):
            variable.assign(original)
