"""Running an Estimator-style model_fn on tf_keras.

``ModelFnModel`` is a ``tf_keras.Model`` whose ``train_step``, ``test_step`` and
``call`` invoke the model_fn in TRAIN, EVAL and PREDICT mode, so ``fit``,
``evaluate`` and ``predict`` (and Keras callbacks such as TensorBoard) work on a
model defined the Estimator way. It is not an Estimator clone: no sessions,
hooks or global steps, only the three mode calls.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from trainer.layers import layer_scope
from trainer.model_fn import IMAGE_KEY, ModeKeys, ModelFn, ModelFnSpec
from trainer.tracing import exempt_tf_keras

# Every train, test and predict step traces tf_keras code: leave it unconverted
# (trainer/tracing.py).
exempt_tf_keras()


class ModelFnModel(keras.Model):
    """A Keras model driven by ``model_fn(features, labels, mode, params)``."""

    def __init__(self, model_fn: ModelFn, params: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model_fn = model_fn
        self.params = dict(params)
        # Layers, metrics and the optimizer the model_fn creates by name; a dict
        # attribute, so Keras tracks every variable in it.
        self.fn_objects: dict[str, Any] = {}
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def get_config(self) -> dict[str, Any]:
        # Reloading goes through the SavedModel signatures, not Keras; the params
        # are enough to rebuild the model with ModelFnModel(model_fn, params).
        return {"params": self.params}

    def run_model_fn(
        self, features: dict[str, tf.Tensor], labels: tf.Tensor | None, mode: str
    ) -> ModelFnSpec:
        with layer_scope(self.fn_objects):
            return self._model_fn(features, labels, mode, self.params)

    def build_from_example(self, features: dict[str, tf.Tensor], labels: tf.Tensor) -> None:
        """Create every layer, metric and the optimizer by running the TRAIN mode
        once on a small batch (no step is applied), then compile with that optimizer."""
        spec = self.run_model_fn(features, labels, ModeKeys.TRAIN)
        spec.optimizer.build(self.trainable_variables)
        self.compile(optimizer=spec.optimizer)
        for metric in self.metrics:
            metric.reset_state()

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        found = [v for k, v in self.fn_objects.items() if k.startswith("metric/")]
        return [self.loss_tracker, *found]

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        # Predictions never use dropout, as in Estimator's PREDICT mode.
        del training
        return self.run_model_fn(features, None, ModeKeys.PREDICT).predictions

    def train_step(self, data: tuple[dict[str, tf.Tensor], tf.Tensor]) -> dict[str, tf.Tensor]:
        features, labels = data
        with tf.GradientTape() as tape:
            spec = self.run_model_fn(features, labels, ModeKeys.TRAIN)
        variables = self.trainable_variables
        gradients = tape.gradient(spec.loss, variables)
        spec.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        self.loss_tracker.update_state(spec.loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: tuple[dict[str, tf.Tensor], tf.Tensor]) -> dict[str, tf.Tensor]:
        features, labels = data
        spec = self.run_model_fn(features, labels, ModeKeys.EVAL)
        self.loss_tracker.update_state(spec.loss)
        return {m.name: m.result() for m in self.metrics}

    def predict_step(self, data: Any) -> dict[str, tf.Tensor]:
        features = data[0] if isinstance(data, tuple) else data
        return self(features, training=False)


def example_batch(batch_size: int = 2) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """A zero batch of the transformed feature shapes, used to build a model."""
    return {IMAGE_KEY: tf.zeros([batch_size, 28, 28, 1], tf.float32)}, tf.zeros(
        [batch_size], tf.int64
    )


def build_model(model_fn: ModelFn, params: dict[str, Any]) -> ModelFnModel:
    """A ready-to-fit model: every variable created, optimizer compiled in."""
    model = ModelFnModel(model_fn, params)
    model.build_from_example(*example_batch())
    return model
