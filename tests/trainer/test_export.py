"""Tests of trainer/export.py: a briefly trained model exported with a real Transform
output (tensorflow_transform on Beam), reloaded with tf.saved_model.load and called
through its three signatures."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from ingest.convert import image_to_example
from ingest.datasets import get_dataset
from tests.transform_fixture import RAW_FEATURE_SPEC, build_transform_output
from trainer.export import SERVING_SIGNATURES, export_serving_model, pixels_to_image_bytes
from trainer.hparams import HParams
from trainer.model import ModelFnModel, build_model
from trainer.model_fn import IMAGE_KEY, cnn_model_fn
from trainer.transform import LABEL_KEY

CLASS_NAMES = get_dataset("fashion_mnist").class_names
SHAPE_MESSAGE = r"images: expected shape \[N, 28, 28\] or \[N, 784\], got"
RANGE_MESSAGE = r"images: expected pixel values in 0\.\.255 \(raw, not scaled\), got min/max"
N = 12


@pytest.fixture(scope="module")
def tft_output(tmp_path_factory, fashion_train) -> tft.TFTransformOutput:
    """A real Transform output: preprocessing_fn analysed by tft_beam over 8 raw examples,
    the transform_fn written with WriteTransformFn, the raw schema next to it (as TFX does)."""
    images, labels = fashion_train
    return build_transform_output(tmp_path_factory.mktemp("transform"), images, labels)


@pytest.fixture(scope="module")
def trained_model(fashion_train) -> ModelFnModel:
    """cnn_model_fn fitted for 10 steps of 20 on the first 200 Fashion-MNIST fixture images."""
    images, labels = fashion_train
    keras.utils.set_random_seed(0)
    model = build_model(cnn_model_fn, HParams().to_params())
    model.fit(
        {IMAGE_KEY: images[:200].astype(np.float32)[..., None] / np.float32(255)},
        labels[:200].astype(np.int64),
        batch_size=20,
        epochs=1,
        verbose=0,
    )
    assert int(model.optimizer.iterations.numpy()) == 10
    return model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, trained_model, tft_output) -> str:
    directory = str(tmp_path_factory.mktemp("export") / "serving_model")
    assert export_serving_model(trained_model, tft_output, directory, CLASS_NAMES) == directory
    return directory


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(export_dir)


@pytest.fixture(scope="module")
def test_images(fashion_train) -> tuple[np.ndarray, np.ndarray]:
    """N held-out fixture images (not used for training), uint8 [N, 28, 28], and labels."""
    images, labels = fashion_train
    return images[200 : 200 + N], labels[200 : 200 + N]


def serialized_examples(images: np.ndarray, labels: np.ndarray) -> tf.Tensor:
    return tf.constant(
        [
            image_to_example(im, int(lb)).SerializeToString()
            for im, lb in zip(images, labels, strict=True)
        ]
    )


def as_numpy(outputs: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in outputs.items()}


def check_outputs(outputs: dict[str, np.ndarray], count: int) -> None:
    """The documented output contract of every signature."""
    assert sorted(outputs) == ["class_names", "classes", "probabilities"]
    assert (outputs["classes"].dtype, outputs["classes"].shape) == (np.int64, (count,))
    assert (outputs["probabilities"].dtype, outputs["probabilities"].shape) == (
        np.float32,
        (count, 10),
    )
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), np.ones(count), atol=1e-6)
    np.testing.assert_array_equal(outputs["classes"], outputs["probabilities"].argmax(axis=1))
    assert outputs["class_names"].tolist() == [CLASS_NAMES[c].encode() for c in outputs["classes"]]


def test_tft_output_has_pipeline_feature_specs(tft_output):
    """The Transform output fixture has the raw and transformed specs the pipeline produces."""
    assert tft_output.raw_feature_spec() == RAW_FEATURE_SPEC
    assert tft_output.transformed_feature_spec() == {
        IMAGE_KEY: tf.io.FixedLenFeature([28, 28, 1], tf.float32),
        LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
    }


def test_export_writes_saved_model_with_three_signatures(export_dir, loaded):
    """The export is a SavedModel with exactly the documented signatures and inputs."""
    assert tf.io.gfile.exists(f"{export_dir}/saved_model.pb")
    assert tf.io.gfile.exists(f"{export_dir}/variables/variables.index")
    assert sorted(loaded.signatures) == sorted(SERVING_SIGNATURES)
    inputs = {
        name: loaded.signatures[name].structured_input_signature[1] for name in SERVING_SIGNATURES
    }
    assert inputs["serving_default"] == {
        "examples": tf.TensorSpec([None], tf.string, name="examples")
    }
    assert inputs["predict_images"] == {"images": tf.TensorSpec(None, tf.float32, name="images")}
    assert inputs["predict_images_uint8"] == {
        "images": tf.TensorSpec(None, tf.uint8, name="images")
    }


def test_serving_default_on_serialized_examples(loaded, test_images):
    """serving_default takes serialized tf.Examples (label included or not)."""
    images, labels = test_images
    outputs = as_numpy(
        loaded.signatures["serving_default"](examples=serialized_examples(images, labels))
    )
    check_outputs(outputs, N)

    image_only = tf.constant(
        [
            tf.train.Example(
                features=tf.train.Features(
                    feature={
                        IMAGE_KEY: tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[im.tobytes()])
                        )
                    }
                )
            ).SerializeToString()
            for im in images
        ]
    )
    without_label = as_numpy(loaded.signatures["serving_default"](examples=image_only))
    np.testing.assert_array_equal(without_label["probabilities"], outputs["probabilities"])


def test_trained_model_is_better_than_chance(loaded, fashion_train):
    """After 10 steps the export classifies held-out fixture images well above 10%."""
    images, labels = fashion_train
    outputs = loaded.signatures["predict_images_uint8"](images=tf.constant(images[200:]))
    accuracy = np.mean(outputs["classes"].numpy() == labels[200:])
    assert accuracy > 0.3
    assert len(np.unique(outputs["classes"].numpy())) >= 4


def test_all_signatures_agree_exactly(loaded, test_images):
    """The same images through the three signatures (and both pixel layouts) give
    identical classes, probabilities and class names."""
    images, labels = test_images
    reference = as_numpy(
        loaded.signatures["serving_default"](examples=serialized_examples(images, labels))
    )
    candidates = {
        "float [N,28,28]": loaded.signatures["predict_images"](
            images=tf.constant(images.astype(np.float32))
        ),
        "float [N,784]": loaded.signatures["predict_images"](
            images=tf.constant(images.reshape(N, 784).astype(np.float32))
        ),
        "uint8 [N,28,28]": loaded.signatures["predict_images_uint8"](images=tf.constant(images)),
        "uint8 [N,784]": loaded.signatures["predict_images_uint8"](
            images=tf.constant(images.reshape(N, 784))
        ),
    }
    for name, outputs in candidates.items():
        outputs = as_numpy(outputs)
        check_outputs(outputs, N)
        for key in reference:
            np.testing.assert_array_equal(outputs[key], reference[key], err_msg=name)


def test_signatures_agree_with_keras_model(loaded, trained_model, tft_output, test_images):
    """The export predicts what the Keras model predicts on pixels / 255 (identically on
    the Transform layer's output, within float rounding on numpy's pixels / 255)."""
    images, _ = test_images
    served = as_numpy(loaded.signatures["predict_images_uint8"](images=tf.constant(images)))

    direct = as_numpy(
        trained_model(
            {IMAGE_KEY: tf.constant(images.astype(np.float32)[..., None] / np.float32(255))}
        )
    )
    np.testing.assert_array_equal(served["classes"], direct["classes"])
    np.testing.assert_allclose(served["probabilities"], direct["probabilities"], atol=1e-6)

    transformed = tft_output.transform_features_layer()(
        {IMAGE_KEY: tf.constant([[im.tobytes()] for im in images])}
    )[IMAGE_KEY]
    through_transform = as_numpy(trained_model({IMAGE_KEY: transformed}))
    np.testing.assert_array_equal(served["probabilities"], through_transform["probabilities"])
    np.testing.assert_array_equal(served["classes"], through_transform["classes"])


def test_single_image_batch(loaded, test_images):
    """A batch of one image of shape [1, 784] works."""
    images, _ = test_images
    outputs = as_numpy(
        loaded.signatures["predict_images"](
            images=tf.constant(images[:1].reshape(1, 784), tf.float32)
        )
    )
    check_outputs(outputs, 1)


def test_float_pixels_are_rounded_to_nearest_byte(loaded, test_images):
    """Float pixels within 0..255 are rounded, so slightly off values give the same answer."""
    images, _ = test_images
    exact = loaded.signatures["predict_images"](images=tf.constant(images.astype(np.float32)))
    noise = np.where(images < 255, 0.4, -0.4).astype(np.float32)
    noisy = loaded.signatures["predict_images"](
        images=tf.constant(images.astype(np.float32) + noise)
    )
    np.testing.assert_array_equal(noisy["probabilities"].numpy(), exact["probabilities"].numpy())


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 27, 27), np.float32), SHAPE_MESSAGE + r"\] \[2 27 27\]"),
        (np.zeros((2, 783), np.float32), SHAPE_MESSAGE + r"\] \[2 783\]"),
        (np.zeros((3, 28, 27), np.float32), SHAPE_MESSAGE + r"\] \[3 28 27\]"),
        (np.full((2, 28, 28), 300, np.float32), RANGE_MESSAGE + r"\] \[300\] \[300\]"),
        (np.full((2, 784), -1, np.float32), RANGE_MESSAGE + r"\] \[-1\] \[-1\]"),
        (np.full((1, 784), np.nan, np.float32), RANGE_MESSAGE),
    ],
    ids=["2x27x27", "2x783", "3x28x27", "value300", "value-1", "nan"],
)
def test_predict_images_rejects_bad_input_with_clear_message(loaded, images, message):
    """Wrong shapes or values outside 0..255 raise InvalidArgumentError saying what is expected."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["predict_images"](images=tf.constant(images))


def test_predict_images_uint8_rejects_bad_shape(loaded):
    """The uint8 signature checks the shape as well."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_MESSAGE + r"\] \[2 27 27\]"):
        loaded.signatures["predict_images_uint8"](
            images=tf.constant(np.zeros((2, 27, 27), np.uint8))
        )


@pytest.mark.parametrize("shape", [(784,), (1, 28, 28, 1)], ids=["unbatched784", "1x28x28x1"])
def test_predict_images_wrong_rank_gets_clear_message(loaded, shape):
    """An unbatched image or a channel axis gets the [N, 28, 28] or [N, 784] shape error."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_MESSAGE):
        loaded.signatures["predict_images"](images=tf.constant(np.zeros(shape, np.float32)))


@pytest.mark.parametrize(
    ("dtype", "layout"),
    [
        (np.uint8, (28, 28)),
        (np.uint8, (784,)),
        (np.float32, (28, 28)),
        (np.float32, (784,)),
        (np.float64, (28, 28)),
        (np.int32, (784,)),
        (np.int64, (28, 28)),
    ],
)
def test_pixels_to_image_bytes_round_trips(test_images, dtype, layout):
    """Pixels of any real or integer dtype, [N, 28, 28] or [N, 784], give back the raw bytes."""
    images, _ = test_images
    result = pixels_to_image_bytes(tf.constant(images.reshape((N, *layout)).astype(dtype)))
    assert (result.dtype, result.shape) == (tf.string, (N,))
    assert result.numpy().tolist() == [image.tobytes() for image in images]


def test_pixels_to_image_bytes_every_value():
    """Every value 0..255 maps to its own byte, in row-major order."""
    pixels = np.resize(np.arange(256, dtype=np.uint8), 784)
    result = pixels_to_image_bytes(tf.constant(pixels[None].astype(np.float32)))
    assert result.numpy()[0] == pixels.tobytes()
    assert result.numpy()[0][:256] == bytes(range(256))


def test_pixels_to_image_bytes_checks_range_eagerly():
    """Called eagerly, out-of-range pixels raise the same range error."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=RANGE_MESSAGE):
        pixels_to_image_bytes(tf.constant(np.full((1, 784), 255.5, np.float32)))
