"""The serving export: a SavedModel that TF Serving loads, with the Transform
graph inside every signature so clients send raw data, never scaled pixels.

Signatures (all return ``classes`` int64 [N], ``probabilities`` float32 [N, 10]
and ``class_names`` string [N]):

* ``serving_default``: ``examples``, serialized ``tf.Example`` strings [N] with the
  raw ``image`` bytes feature (what ExampleGen stored; what the Evaluator feeds);
* ``predict_images``: ``images``, float32 pixels 0..255, shape [N, 28, 28] or [N, 784]
  (TF Serving's REST API turns JSON numbers into this);
* ``predict_images_uint8``: the same for uint8 pixels (gRPC clients holding uint8 arrays).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from trainer.transform import IMAGE_KEY, LABEL_KEY, NUM_PIXELS

SERVING_SIGNATURES = ("serving_default", "predict_images", "predict_images_uint8")

# Byte string of each value 0..255, to turn pixels back into the raw image bytes
# the Transform graph expects.
_BYTE_VALUES = [bytes([value]) for value in range(256)]


def pixels_to_image_bytes(images: tf.Tensor) -> tf.Tensor:
    """Pixels 0..255, [N, 28, 28] or [N, 784] (any real or integer dtype), to raw bytes [N]."""
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    rank = tf.rank(images)
    # Padded so that any rank (an unbatched [784], a [N, 28, 28, 1]) reaches the
    # message below instead of failing inside the comparison.
    dims = tf.concat([shape, tf.zeros([3], tf.int32)], axis=0)[:3]
    well_shaped = tf.logical_or(
        tf.logical_and(tf.equal(rank, 2), tf.equal(dims[1], NUM_PIXELS)),
        tf.logical_and(
            tf.equal(rank, 3), tf.logical_and(tf.equal(dims[1], 28), tf.equal(dims[2], 28))
        ),
    )
    checks = [
        tf.debugging.Assert(
            well_shaped, ["images: expected shape [N, 28, 28] or [N, 784], got", shape]
        )
    ]
    if images.dtype != tf.uint8:
        values = tf.cast(images, tf.float32)
        checks.append(
            tf.debugging.Assert(
                tf.logical_and(tf.reduce_all(values >= 0.0), tf.reduce_all(values <= 255.0)),
                [
                    "images: expected pixel values in 0..255 (raw, not scaled), got min/max",
                    tf.reduce_min(values),
                    tf.reduce_max(values),
                ],
            )
        )
    with tf.control_dependencies(checks):
        flat = tf.reshape(images, [-1, NUM_PIXELS])
    indices = tf.cast(tf.round(tf.cast(flat, tf.float32)), tf.int32)
    table = tf.constant(_BYTE_VALUES)
    return tf.strings.reduce_join(tf.gather(table, indices), axis=1)


class ServingModule(tf.Module):
    """What is saved: the trained model, the Transform layer and the signatures."""

    def __init__(
        self, model: keras.Model, tft_output: tft.TFTransformOutput, class_names: Sequence[str]
    ) -> None:
        super().__init__()
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        raw_spec = dict(tft_output.raw_feature_spec())
        raw_spec.pop(LABEL_KEY, None)
        self._raw_spec = raw_spec
        self._class_names = tf.constant(list(class_names))

    def _predict_raw(self, raw_features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer(raw_features)
        predictions = self.model({IMAGE_KEY: transformed[IMAGE_KEY]}, training=False)
        classes = tf.cast(predictions["classes"], tf.int64)
        return {
            "classes": classes,
            "probabilities": predictions["probabilities"],
            "class_names": tf.gather(self._class_names, classes),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_raw(tf.io.parse_example(examples, self._raw_spec))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_pixels(images)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serve_images_uint8(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_pixels(images)

    def _predict_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        image_bytes = pixels_to_image_bytes(images)
        # The Transform graph was traced on the parsed-example shape [N, 1].
        return self._predict_raw({IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})


def export_serving_model(
    model: keras.Model,
    tft_output: tft.TFTransformOutput,
    serving_model_dir: str,
    class_names: Sequence[str],
) -> str:
    """Write the SavedModel with the three signatures to ``serving_model_dir``."""
    module = ServingModule(model, tft_output, class_names)
    signatures = {
        "serving_default": module.serve_examples.get_concrete_function(),
        "predict_images": module.serve_images.get_concrete_function(),
        "predict_images_uint8": module.serve_images_uint8.get_concrete_function(),
    }
    tf.saved_model.save(module, serving_model_dir, signatures=signatures)
    return serving_model_dir
