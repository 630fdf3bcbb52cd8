"""Estimator-style model functions and their contract.

A model_fn is ``model_fn(features, labels, mode, params) -> ModelFnSpec``: one
function that owns the predictions, the loss, the optimizer and the metrics for
the three modes, exactly as ``tf.estimator`` model_fns did:

* PREDICT: ``predictions`` with ``classes`` (argmax) and ``probabilities`` (softmax);
* TRAIN: ``loss`` (sparse softmax cross-entropy) and the ``optimizer`` whose step
  the runner applies to the loss's gradients, plus the training accuracy;
* EVAL: ``loss`` and ``eval_metric_ops`` with ``accuracy``.

Four model_fns are registered in ``MODEL_FNS``, one per reference tutorial:
``softmax`` (MNIST for ML beginners), ``mlp`` (Keras basic classification),
``deep_cnn`` (Deep MNIST for experts) and ``cnn_model_fn`` (the TF layers
tutorial, the pipeline's default). Their default settings and tutorial
headlines are in ``trainer/hparams.py`` (``MODEL_DEFAULTS``).

``features["image"]`` is the Transform output: float32 in [0, 1], shape [N, 28, 28, 1].
The code that runs a model_fn on tf_keras (fit / evaluate / predict) is in
``trainer/model.py``; the layer helpers that give TF1-style reuse by name are
in ``trainer/layers.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from trainer import layers

IMAGE_KEY = "image"
LABEL_KEY = "label"
NUM_CLASSES = 10


class ModeKeys:
    """The three modes of the Estimator contract (same strings as tf.estimator)."""

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"


@dataclass
class ModelFnSpec:
    """What a model_fn returns: the TF2 counterpart of ``tf.estimator.EstimatorSpec``."""

    mode: str
    predictions: dict[str, tf.Tensor]
    loss: tf.Tensor | None = None
    optimizer: Any = None
    eval_metric_ops: dict[str, Any] = field(default_factory=dict)


ModelFn = Callable[[dict[str, tf.Tensor], "tf.Tensor | None", str, dict[str, Any]], ModelFnSpec]


def _spec_from_logits(
    logits: tf.Tensor, labels: tf.Tensor | None, mode: str, params: dict[str, Any]
) -> ModelFnSpec:
    """The part every classifier here shares: predictions from the logits, the mean
    sparse softmax cross-entropy, accuracy and the optimizer built from ``params``.

    Under a mixed-precision policy the layers hand back bfloat16 logits; they are
    cast to float32 first, so the softmax, the loss and its gradient's first step
    are taken in float32 (bfloat16's 8-bit mantissa would round the small
    probabilities of a confident model) and every prediction leaves the model as
    float32, whatever the policy it was trained under."""
    logits = tf.cast(logits, tf.float32)
    predictions = {
        "classes": tf.argmax(logits, axis=1),
        "probabilities": tf.nn.softmax(logits, name="softmax_tensor"),
    }
    if mode == ModeKeys.PREDICT:
        return ModelFnSpec(mode=mode, predictions=predictions)

    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    metrics = {"accuracy": layers.accuracy(labels, predictions["classes"])}
    if mode == ModeKeys.TRAIN:
        return ModelFnSpec(
            mode=mode,
            predictions=predictions,
            loss=loss,
            optimizer=layers.optimizer(params),
            eval_metric_ops=metrics,
        )
    return ModelFnSpec(mode=mode, predictions=predictions, loss=loss, eval_metric_ops=metrics)


def _images(features: dict[str, tf.Tensor], mode: str, params: dict[str, Any]) -> tf.Tensor:
    """The image feature as [N, 28, 28, 1], whether given so or as [N, 784]; in TRAIN
    mode randomly shifted by up to ``params['augment_shift']`` pixels (0: not at all).
    EVAL and PREDICT always see the images as given."""
    images = tf.reshape(features[IMAGE_KEY], [-1, 28, 28, 1])
    return layers.random_shift(
        images,
        int(params.get("augment_shift", 0)),
        training=mode == ModeKeys.TRAIN,
        name="augment_shift",
    )


def softmax_model_fn(
    features: dict[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: dict[str, Any],
) -> ModelFnSpec:
    """MNIST for ML beginners: softmax regression, one dense layer 784->10
    (7,850 parameters; the tutorial started its weights and bias at zero)."""
    pixels = layers.flatten(_images(features, mode, params))
    logits = layers.dense(pixels, NUM_CLASSES, name="logits", **layers.initializers(params))
    return _spec_from_logits(logits, labels, mode, params)


def mlp_model_fn(
    features: dict[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: dict[str, Any],
) -> ModelFnSpec:
    """Keras basic classification: flatten, dense 128 ReLU, dense 10 logits
    (101,770 parameters)."""
    pixels = layers.flatten(_images(features, mode, params))
    hidden = layers.dense(
        pixels, 128, activation="relu", name="hidden", **layers.initializers(params)
    )
    logits = layers.dense(hidden, NUM_CLASSES, name="logits", **layers.initializers(params))
    return _spec_from_logits(logits, labels, mode, params)


def deep_cnn_model_fn(
    features: dict[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: dict[str, Any],
) -> ModelFnSpec:
    """Deep MNIST for experts: conv 5x5x32 SAME, pool, conv 5x5x64 SAME, pool,
    dense 1024, dropout (keep_prob 0.5), 10 logits (3,274,634 parameters); weights
    and biases initialised as ``params`` say (the tutorial: truncated normal 0.1, 0.1)."""
    training = mode == ModeKeys.TRAIN
    h_conv1 = layers.conv2d(
        _images(features, mode, params),
        32,
        5,
        activation="relu",
        name="conv1",
        **layers.initializers(params),
    )
    h_pool1 = layers.max_pooling2d(h_conv1, 2, 2, name="pool1")
    h_conv2 = layers.conv2d(
        h_pool1, 64, 5, activation="relu", name="conv2", **layers.initializers(params)
    )
    h_pool2 = layers.max_pooling2d(h_conv2, 2, 2, name="pool2")
    h_fc1 = layers.dense(
        layers.flatten(h_pool2), 1024, activation="relu", name="fc1", **layers.initializers(params)
    )
    h_fc1_drop = layers.dropout(
        h_fc1, params.get("dropout_rate", 0.5), training=training, name="dropout"
    )
    logits = layers.dense(h_fc1_drop, NUM_CLASSES, name="fc2", **layers.initializers(params))
    return _spec_from_logits(logits, labels, mode, params)


def cnn_model_fn(
    features: dict[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: dict[str, Any],
) -> ModelFnSpec:
    """The CNN of the TF layers tutorial: conv 5x5x32, pool, conv 5x5x64, pool,
    dense 1024, dropout, 10 logits (3,274,634 parameters)."""
    training = mode == ModeKeys.TRAIN
    input_layer = _images(features, mode, params)
    conv1 = layers.conv2d(
        input_layer, 32, 5, activation="relu", name="conv1", **layers.initializers(params)
    )
    pool1 = layers.max_pooling2d(conv1, 2, 2, name="pool1")
    conv2 = layers.conv2d(
        pool1, 64, 5, activation="relu", name="conv2", **layers.initializers(params)
    )
    pool2 = layers.max_pooling2d(conv2, 2, 2, name="pool2")
    pool2_flat = layers.flatten(pool2)
    dense = layers.dense(
        pool2_flat, 1024, activation="relu", name="dense", **layers.initializers(params)
    )
    dropped = layers.dropout(
        dense, params.get("dropout_rate", 0.4), training=training, name="dropout"
    )
    logits = layers.dense(dropped, NUM_CLASSES, name="logits", **layers.initializers(params))
    return _spec_from_logits(logits, labels, mode, params)


# Registered by the names the CLI and trainer/hparams.py's MODEL_DEFAULTS use.
MODEL_FNS: dict[str, ModelFn] = {
    "softmax": softmax_model_fn,
    "mlp": mlp_model_fn,
    "deep_cnn": deep_cnn_model_fn,
    "cnn_model_fn": cnn_model_fn,
}


def get_model_fn(name: str) -> ModelFn:
    """The registered model_fn called ``name``; ValueError naming the registered ones."""
    if name not in MODEL_FNS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODEL_FNS)}")
    return MODEL_FNS[name]
