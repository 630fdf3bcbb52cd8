"""The Transform component's ``preprocessing_fn``.

Raw examples carry ``image`` (784 raw uint8 bytes, row-major 28x28) and ``label``
(int64). The transform decodes the bytes and divides by 255, a fixed scale rather
than a dataset-dependent min/max, so the same graph is right for MNIST,
Fashion-MNIST and any single image a serving client sends. TFX exports this graph
and the Trainer embeds it in the serving model.
"""

from __future__ import annotations

import tensorflow as tf

IMAGE_KEY = "image"
LABEL_KEY = "label"
IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE


def scale_pixels(raw_image_bytes: tf.Tensor) -> tf.Tensor:
    """Raw image bytes, shape [N] or [N, 1], to float32 in [0, 1], shape [N, 28, 28, 1]."""
    pixels = tf.io.decode_raw(tf.reshape(raw_image_bytes, [-1]), tf.uint8)
    pixels = tf.reshape(pixels, [-1, IMAGE_SIZE, IMAGE_SIZE, 1])
    return tf.cast(pixels, tf.float32) / 255.0


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """TFT entry point: scaled image, label passed through unchanged."""
    outputs = {IMAGE_KEY: scale_pixels(inputs[IMAGE_KEY])}
    if LABEL_KEY in inputs:
        outputs[LABEL_KEY] = inputs[LABEL_KEY]
    return outputs
