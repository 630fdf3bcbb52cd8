"""Tests of trainer/transform.py on the raw bytes of real fixture images, eagerly,
as a traced graph, and through tensorflow_transform's Beam implementation."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from trainer.transform import IMAGE_KEY, LABEL_KEY, preprocessing_fn, scale_pixels

# What the pipeline's SchemaGen infers for ExampleGen's records.
RAW_FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
    LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
}


def expected_scaled(images: np.ndarray) -> np.ndarray:
    """pixels / 255 in float32 (correctly rounded division), shape [N, 28, 28, 1]."""
    return images.astype(np.float32)[..., None] / np.float32(255)


def raw_bytes(images: np.ndarray) -> list[bytes]:
    return [image.tobytes() for image in images]


@pytest.mark.parametrize("batch_shape", ["flat", "column"])
def test_preprocessing_fn_scales_real_images_exactly(mnist_train, batch_shape):
    """Eagerly, [N] or [N, 1] raw bytes become float32 [N, 28, 28, 1] equal to pixels / 255."""
    images, labels = mnist_train
    image_bytes = tf.constant(raw_bytes(images))
    label_tensor = tf.constant(labels.astype(np.int64))
    if batch_shape == "column":
        image_bytes = tf.reshape(image_bytes, [-1, 1])
        label_tensor = tf.reshape(label_tensor, [-1, 1])

    outputs = preprocessing_fn({IMAGE_KEY: image_bytes, LABEL_KEY: label_tensor})

    assert sorted(outputs) == [IMAGE_KEY, LABEL_KEY]
    image = outputs[IMAGE_KEY].numpy()
    assert image.dtype == np.float32
    assert image.shape == (300, 28, 28, 1)
    np.testing.assert_array_equal(image, expected_scaled(images))
    assert image.min() == 0.0
    assert image.max() == 1.0
    # Each image keeps its own contrast: no dataset-dependent normalisation.
    np.testing.assert_array_equal(
        image.max(axis=(1, 2, 3)), images.max(axis=(1, 2)) / np.float32(255)
    )


@pytest.mark.parametrize("batch_shape", [[-1], [-1, 1]])
def test_label_passes_through_unchanged(mnist_train, batch_shape):
    """The label tensor comes out with the same values, dtype and shape."""
    _, labels = mnist_train
    label_tensor = tf.reshape(tf.constant(labels.astype(np.int64)), batch_shape)
    image_bytes = tf.reshape(tf.constant(raw_bytes(mnist_train[0])), batch_shape)
    out = preprocessing_fn({IMAGE_KEY: image_bytes, LABEL_KEY: label_tensor})[LABEL_KEY]
    assert out.dtype == tf.int64
    assert out.shape == label_tensor.shape
    np.testing.assert_array_equal(out.numpy().reshape(-1), labels)
    assert np.bincount(out.numpy().reshape(-1)).tolist() == [30] * 10


def test_preprocessing_fn_without_label_outputs_image_only(mnist_eval):
    """Serving requests carry no label; the output then has only the image."""
    images, _ = mnist_eval
    outputs = preprocessing_fn({IMAGE_KEY: tf.constant(raw_bytes(images[:5]))})
    assert list(outputs) == [IMAGE_KEY]
    np.testing.assert_array_equal(outputs[IMAGE_KEY].numpy(), expected_scaled(images[:5]))


def test_every_byte_value_maps_to_value_over_255():
    """All 256 pixel values, in row-major position order."""
    pixels = np.resize(np.arange(256, dtype=np.uint8), 784).reshape(1, 28, 28)
    scaled = scale_pixels(tf.constant(raw_bytes(pixels))).numpy()
    np.testing.assert_array_equal(scaled, expected_scaled(pixels))
    assert scaled[0, 0, :5, 0].tolist() == [
        0.0,
        np.float32(1 / 255),
        np.float32(2 / 255),
        np.float32(3 / 255),
        np.float32(4 / 255),
    ]
    assert scaled[0, 9, 3, 0] == 1.0  # position 255 = row 9, column 3


def test_fashion_mnist_scales_the_same_way(fashion_train):
    """The fixed /255 scale is right for Fashion-MNIST too."""
    images, _ = fashion_train
    scaled = scale_pixels(tf.constant(raw_bytes(images))).numpy()
    np.testing.assert_array_equal(scaled, expected_scaled(images))
    assert (scaled.min(), scaled.max()) == (0.0, 1.0)


def test_traced_graph_matches_eager_within_one_ulp(mnist_train):
    """As a tf.function (how TFT and serving run it) the result is the same for [N] and
    [N, 1] input and within 1 float32 ulp of pixels / 255 (TF's graph optimizer may turn
    the division by a constant into a multiplication by its reciprocal)."""
    images, _ = mnist_train
    traced = tf.function(scale_pixels)
    flat = traced(tf.constant(raw_bytes(images))).numpy()
    column = traced(tf.constant(raw_bytes(images))[:, None]).numpy()
    np.testing.assert_array_equal(flat, column)
    np.testing.assert_array_max_ulp(flat, expected_scaled(images), maxulp=1)
    assert (flat.min(), flat.max()) == (0.0, 1.0)


def test_wrong_byte_length_is_an_error(mnist_train):
    """Images that are not 784 bytes cannot be decoded into 28x28."""
    images, _ = mnist_train
    good = images[0].tobytes()
    with pytest.raises(tf.errors.InvalidArgumentError):
        scale_pixels(tf.constant([good, good[:-1]]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        scale_pixels(tf.constant([good[:-28], good[:-28]]))


def test_tft_beam_analyze_and_transform(mnist_train, tmp_path):
    """Through real tensorflow_transform (Beam, in process) on 8 raw examples shaped as
    SchemaGen infers them: image float32 [28, 28, 1] in [0, 1], label unchanged."""
    images, labels = mnist_train
    count = 8
    raw_data = [
        {IMAGE_KEY: [images[i].tobytes()], LABEL_KEY: [int(labels[i])]} for i in range(count)
    ]
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC)
    )

    with tft_beam.Context(temp_dir=str(tmp_path / "tft_tmp")):
        (transformed, transformed_metadata), _ = (
            raw_data,
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)

    assert schema_utils.schema_as_feature_spec(transformed_metadata.schema).feature_spec == {
        IMAGE_KEY: tf.io.FixedLenFeature([28, 28, 1], tf.float32),
        LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
    }
    assert len(transformed) == count
    out_images = np.stack([row[IMAGE_KEY] for row in transformed])
    out_labels = np.stack([row[LABEL_KEY] for row in transformed])
    assert out_images.dtype == np.float32
    assert out_images.shape == (count, 28, 28, 1)
    assert out_labels.tolist() == [[int(v)] for v in labels[:count]]
    np.testing.assert_array_max_ulp(out_images, expected_scaled(images[:count]), maxulp=1)
    assert (out_images.min(), out_images.max()) == (0.0, 1.0)
    # Identical to the traced function, i.e. what training and serving compute.
    traced = tf.function(scale_pixels)(tf.constant(raw_bytes(images[:count]))).numpy()
    np.testing.assert_array_equal(out_images, traced)
