"""Functional building blocks for Estimator-style model_fns on tf_keras.

A TF1 model_fn called ``tf.layers.conv2d(..., name="conv1")`` and relied on the
graph's variable scope to reuse the same weights each time the function ran
(train graph, eval graph, serving graph). These helpers give that behaviour on
Keras 2: inside ``layer_scope(store)`` each call looks its layer (or metric, or
optimizer) up by name in ``store`` and creates it only the first time. The
store is a dict owned by the Keras model, so Keras tracks, checkpoints and
exports every variable.

Nothing here knows about a particular architecture; the architectures live in
``trainer/model_fn.py``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import tensorflow as tf
import tf_keras as keras

from trainer.optimizers import FusedAdam

_STORE: contextvars.ContextVar[MutableMapping[str, Any] | None] = contextvars.ContextVar(
    "model_fn_layer_store", default=None
)


@contextlib.contextmanager
def layer_scope(store: MutableMapping[str, Any]) -> Iterator[None]:
    """Make ``store`` the place where the helpers below keep their objects."""
    token = _STORE.set(store)
    try:
        yield
    finally:
        _STORE.reset(token)


def get_or_create(name: str, factory: Callable[[], Any]) -> Any:
    """Return the object called ``name`` in the current scope, creating it once."""
    store = _STORE.get()
    if store is None:
        raise RuntimeError(
            f"model_fn building block {name!r} used outside layer_scope(); "
            "run model_fns through trainer.model.ModelFnModel"
        )
    if name not in store:
        store[name] = factory()
    return store[name]


def conv2d(
    inputs: tf.Tensor,
    filters: int,
    kernel_size: int,
    name: str,
    activation: str | None = None,
    padding: str = "same",
    kernel_initializer: Any = "glorot_uniform",
    bias_initializer: Any = "zeros",
) -> tf.Tensor:
    layer = get_or_create(
        name,
        lambda: keras.layers.Conv2D(
            filters,
            kernel_size,
            padding=padding,
            activation=activation,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            name=name,
        ),
    )
    return layer(inputs)


def max_pooling2d(inputs: tf.Tensor, pool_size: int, strides: int, name: str) -> tf.Tensor:
    layer = get_or_create(name, lambda: keras.layers.MaxPooling2D(pool_size, strides, name=name))
    return layer(inputs)


def dense(
    inputs: tf.Tensor,
    units: int,
    name: str,
    activation: str | None = None,
    kernel_initializer: Any = "glorot_uniform",
    bias_initializer: Any = "zeros",
) -> tf.Tensor:
    layer = get_or_create(
        name,
        lambda: keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            name=name,
        ),
    )
    return layer(inputs)


def dropout(inputs: tf.Tensor, rate: float, training: bool, name: str) -> tf.Tensor:
    layer = get_or_create(name, lambda: keras.layers.Dropout(rate, name=name))
    return layer(inputs, training=training)


def flatten(inputs: tf.Tensor) -> tf.Tensor:
    return tf.reshape(inputs, [-1, inputs.shape[1:].num_elements()])


# Plain Python on params, no tensors: AutoGraph would fail on the annotated
# assignment below ("annotated name 'kernel' can't be nonlocal") and log a warning
# asking for a bug report every time a model_fn is traced.
@tf.autograph.experimental.do_not_convert
def initializers(params: dict[str, Any]) -> dict[str, keras.initializers.Initializer]:
    """``kernel_initializer`` and ``bias_initializer`` for one conv2d or dense call,
    from ``params`` (``kernel_initializer``: glorot_uniform, zeros or truncated_normal
    with ``kernel_init_stddev``; every bias the constant ``bias_init_value``).

    Call it once per layer: each call makes new initializer objects, because Keras
    warns about (and repeats the values of) an unseeded initializer used twice.
    """
    kind = params.get("kernel_initializer", "glorot_uniform")
    if kind == "glorot_uniform":
        kernel: keras.initializers.Initializer = keras.initializers.GlorotUniform()
    elif kind == "zeros":
        kernel = keras.initializers.Zeros()
    elif kind == "truncated_normal":
        # Like tf.truncated_normal: values beyond two standard deviations are redrawn.
        kernel = keras.initializers.TruncatedNormal(stddev=float(params["kernel_init_stddev"]))
    else:
        raise ValueError(f"params['kernel_initializer']: unknown initializer {kind!r}")
    bias = keras.initializers.Constant(float(params.get("bias_init_value", 0.0)))
    return {"kernel_initializer": kernel, "bias_initializer": bias}


def accuracy(labels: tf.Tensor, predicted_classes: tf.Tensor, name: str = "accuracy") -> Any:
    """Update and return the streaming accuracy metric called ``name``
    (the counterpart of ``tf.compat.v1.metrics.accuracy``)."""
    metric = get_or_create(f"metric/{name}", lambda: keras.metrics.Accuracy(name=name))
    metric.update_state(tf.reshape(labels, [-1]), tf.reshape(predicted_classes, [-1]))
    return metric


def learning_rate_schedule(
    params: dict[str, Any],
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``params['learning_rate']`` as the run uses it over ``params['total_steps']``:
    a linear warm-up from 0 over the first ``warmup_fraction`` of the steps, then a
    cosine decay to ``final_learning_rate_fraction`` of it at the last step. Without
    a known step count, or with neither warm-up nor decay, the constant rate.

    The warm-up lets a higher peak rate be used without the first Adam steps (taken
    on second-moment estimates of a handful of gradients) throwing the weights off;
    the cosine tail is where a short run gains its last tenths of a point."""
    learning_rate = float(params["learning_rate"])
    total_steps = int(params.get("total_steps") or 0)
    final_fraction = float(params.get("final_learning_rate_fraction", 1.0))
    warmup_steps = int(round(total_steps * float(params.get("warmup_fraction", 0.0))))
    if total_steps <= 0 or (final_fraction >= 1.0 and warmup_steps == 0):
        return learning_rate
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=total_steps, alpha=final_fraction
        )
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=final_fraction,
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


def random_shift(inputs: tf.Tensor, max_pixels: int, training: bool, name: str) -> tf.Tensor:
    """Light augmentation: in training, each image moved by a random whole number of
    pixels, -max_pixels..max_pixels on each axis independently, the uncovered border
    filled with 0 (background); outside training the images unchanged, so EVAL and
    PREDICT (and the exported model) are deterministic.

    Kept in float32 whatever the mixed-precision policy: the image transform has no
    bfloat16 kernel, and only the layers after it carry the arithmetic."""
    if not max_pixels:
        return inputs
    size = float(inputs.shape[1])
    layer = get_or_create(
        name,
        lambda: keras.layers.RandomTranslation(
            max_pixels / size,
            max_pixels / size,
            fill_mode="constant",
            interpolation="nearest",
            fill_value=0.0,
            dtype="float32",
            name=name,
        ),
    )
    return layer(inputs, training=training)


def optimizer(params: dict[str, Any]) -> keras.optimizers.Optimizer:
    """The run's optimizer, built once from ``params`` (name, and the learning rate
    schedule of ``learning_rate_schedule``)."""

    def build() -> keras.optimizers.Optimizer:
        learning_rate = learning_rate_schedule(params)
        name = params["optimizer"]
        if name == "adam":
            # tf_keras's Adam with TF's fused update kernel (trainer/optimizers.py).
            return FusedAdam(learning_rate)
        if name == "sgd":
            return keras.optimizers.SGD(learning_rate)
        if name == "momentum":
            return keras.optimizers.SGD(learning_rate, momentum=0.9)
        if name == "rmsprop":
            return keras.optimizers.RMSprop(learning_rate)
        raise ValueError(f"params['optimizer']: unknown optimizer {name!r}")

    return get_or_create("optimizer", build)
