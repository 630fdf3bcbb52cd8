"""Tests of trainer/export.py: a briefly trained model exported with a real Transform
output (tensorflow_transform on Beam), reloaded with tf.saved_model.load and called
through its signatures, with good input and with malformed input that each signature
must refuse inside the exported graph."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from ingest.convert import image_to_example
from ingest.datasets import get_dataset
from tests.transform_fixture import RAW_FEATURE_SPEC, build_transform_output
from trainer.export import (
    SERVING_SIGNATURES,
    check_example_images,
    export_serving_model,
    pixels_to_image_bytes,
    unit_pixels_to_image_bytes,
)
from trainer.hparams import HParams
from trainer.model import ModelFnModel, build_model
from trainer.model_fn import IMAGE_KEY, cnn_model_fn
from trainer.transform import LABEL_KEY

CLASS_NAMES = get_dataset("fashion_mnist").class_names
SHAPE_MESSAGE = r"images: expected shape \[N, 28, 28\] or \[N, 784\], got"
RANGE_MESSAGE = r"images: expected pixel values in 0\.\.255 \(raw, not scaled\), got min/max"
UNIT_SHAPE_MESSAGE = r"images: expected shape \[N, 784\], got"
UNIT_RANGE_MESSAGE = (
    r"images: expected pixel values in \[0, 1\] \(uint8 pixels / 255, as the TF Serving MNIST "
    r"example sends them; send raw 0\.\.255 pixels to predict_pixels\), got min/max"
)
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


def test_export_writes_saved_model_with_its_signatures(export_dir, loaded):
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
    # The pixel inputs have no declared shape: the graph checks it (see trainer/export.py).
    assert inputs["predict_images"] == {"images": tf.TensorSpec(None, tf.float32, name="images")}
    assert inputs["predict_pixels"] == {"images": tf.TensorSpec(None, tf.float32, name="images")}
    assert inputs["predict_pixels_uint8"] == {
        "images": tf.TensorSpec(None, tf.uint8, name="images")
    }
    assert inputs["classify"] == {"inputs": tf.TensorSpec([None], tf.string, name="inputs")}


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
    outputs = loaded.signatures["predict_pixels_uint8"](images=tf.constant(images[200:]))
    accuracy = np.mean(outputs["classes"].numpy() == labels[200:])
    assert accuracy > 0.3
    assert len(np.unique(outputs["classes"].numpy())) >= 4


def test_all_signatures_agree_exactly(loaded, test_images):
    """The same images through the pixel signatures (in both layouts) and serving_default give
    identical classes, probabilities and class names."""
    images, labels = test_images
    reference = as_numpy(
        loaded.signatures["serving_default"](examples=serialized_examples(images, labels))
    )
    candidates = {
        "float [N,28,28]": loaded.signatures["predict_pixels"](
            images=tf.constant(images.astype(np.float32))
        ),
        "float [N,784]": loaded.signatures["predict_pixels"](
            images=tf.constant(images.reshape(N, 784).astype(np.float32))
        ),
        "uint8 [N,28,28]": loaded.signatures["predict_pixels_uint8"](images=tf.constant(images)),
        "uint8 [N,784]": loaded.signatures["predict_pixels_uint8"](
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
    served = as_numpy(loaded.signatures["predict_pixels_uint8"](images=tf.constant(images)))

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
        loaded.signatures["predict_pixels"](
            images=tf.constant(images[:1].reshape(1, 784), tf.float32)
        )
    )
    check_outputs(outputs, 1)


def test_float_pixels_are_rounded_to_nearest_byte(loaded, test_images):
    """Float pixels within 0..255 are rounded, so slightly off values give the same answer."""
    images, _ = test_images
    exact = loaded.signatures["predict_pixels"](images=tf.constant(images.astype(np.float32)))
    noise = np.where(images < 255, 0.4, -0.4).astype(np.float32)
    noisy = loaded.signatures["predict_pixels"](
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
def test_predict_pixels_rejects_bad_input_with_clear_message(loaded, images, message):
    """Wrong shapes or values outside 0..255 raise InvalidArgumentError saying what is expected."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["predict_pixels"](images=tf.constant(images))


def test_predict_pixels_uint8_rejects_bad_shape(loaded):
    """The uint8 signature checks the shape as well."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_MESSAGE + r"\] \[2 27 27\]"):
        loaded.signatures["predict_pixels_uint8"](
            images=tf.constant(np.zeros((2, 27, 27), np.uint8))
        )


@pytest.mark.parametrize("shape", [(784,), (1, 28, 28, 1)], ids=["unbatched784", "1x28x28x1"])
def test_predict_pixels_wrong_rank_gets_clear_message(loaded, shape):
    """An unbatched image or a channel axis gets the [N, 28, 28] or [N, 784] shape error."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_MESSAGE):
        loaded.signatures["predict_pixels"](images=tf.constant(np.zeros(shape, np.float32)))


@pytest.mark.parametrize("signature", ["predict_pixels", "predict_pixels_uint8"])
@pytest.mark.parametrize(
    "shape", [(1, 1568), (2, 392), (1, 56, 28)], ids=["1x1568", "2x392", "1x56x28"]
)
def test_pixel_signatures_check_the_size_of_each_image(loaded, signature, shape):
    """A tensor whose element count is a multiple of 784 but whose images are not 784 pixels
    each is refused, naming the shape found, instead of being reshaped into other images."""
    dtype = np.uint8 if signature.endswith("uint8") else np.float32
    found = " ".join(str(size) for size in shape)
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_MESSAGE + rf"\] \[{found}\]"):
        loaded.signatures[signature](images=tf.constant(np.zeros(shape, dtype)))


def unit_pixels(images: np.ndarray) -> np.ndarray:
    """What TF Serving's mnist_input_data gives its client: float32 [N, 784], uint8 / 255."""
    return images.reshape(len(images), 784).astype(np.float32) * (1.0 / 255.0)


def test_predict_images_keeps_tf_serving_mnist_contract(loaded, test_images):
    """predict_images takes float32 [N, 784] pixels in [0, 1] and returns ``scores`` float32
    [N, 10]: serving_default's probabilities on the same images, exactly."""
    images, labels = test_images
    outputs = as_numpy(loaded.signatures["predict_images"](images=tf.constant(unit_pixels(images))))
    assert sorted(outputs) == ["classes", "scores"]
    assert (outputs["scores"].dtype, outputs["scores"].shape) == (np.float32, (N, 10))
    assert (outputs["classes"].dtype, outputs["classes"].shape) == (np.int64, (N,))
    reference = as_numpy(
        loaded.signatures["serving_default"](examples=serialized_examples(images, labels))
    )
    np.testing.assert_array_equal(outputs["scores"], reference["probabilities"])
    np.testing.assert_array_equal(outputs["classes"], reference["classes"])
    np.testing.assert_array_equal(outputs["classes"], outputs["scores"].argmax(axis=1))
    np.testing.assert_allclose(outputs["scores"].sum(axis=1), np.ones(N), atol=1e-6)


def test_predict_images_rounds_to_the_nearest_pixel_level(loaded, test_images):
    """Values within 0.4 / 255 of a level k / 255 answer as that level does."""
    images, _ = test_images
    exact = loaded.signatures["predict_images"](images=tf.constant(unit_pixels(images)))
    flat = images.reshape(N, 784)
    noise = np.where(flat < 255, 0.4, -0.4).astype(np.float32) / np.float32(255)
    noisy = loaded.signatures["predict_images"](images=tf.constant(unit_pixels(images) + noise))
    np.testing.assert_array_equal(noisy["scores"].numpy(), exact["scores"].numpy())


def _with(value: float, at: int = 0) -> np.ndarray:
    pixels = np.zeros((1, 784), np.float32)
    pixels[0, at] = value
    return pixels


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (_with(255.0), UNIT_RANGE_MESSAGE + r"\] \[0\] \[255\]"),
        (_with(1.5), UNIT_RANGE_MESSAGE + r"\] \[0\] \[1\.5\]"),
        (_with(-0.5), UNIT_RANGE_MESSAGE + r"\] \[-0\.5\] \[0\]"),
        (_with(np.nan), UNIT_RANGE_MESSAGE),
        (np.zeros((1, 28, 28), np.float32), UNIT_SHAPE_MESSAGE + r"\] \[1 28 28\]"),
        (np.zeros((1, 1568), np.float32), UNIT_SHAPE_MESSAGE + r"\] \[1 1568\]"),
        (np.zeros((2, 392), np.float32), UNIT_SHAPE_MESSAGE + r"\] \[2 392\]"),
        (np.zeros((784,), np.float32), UNIT_SHAPE_MESSAGE + r"\] \[784\]"),
    ],
    ids=["raw255", "value1.5", "negative", "nan", "1x28x28", "1x1568", "2x392", "unbatched"],
)
def test_predict_images_refuses_what_is_not_its_contract(loaded, images, message):
    """Pixels outside [0, 1] (raw 0..255 pixels most likely) or any shape but [N, 784] are an
    InvalidArgumentError saying what was found and what is expected, never an answer."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["predict_images"](images=tf.constant(images))


def example_with_image_bytes(data: bytes) -> bytes:
    """A serialized tf.Example whose ``image`` feature holds ``data``, whatever its length."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    example = tf.train.Example(features=tf.train.Features(feature={IMAGE_KEY: feature}))
    return example.SerializeToString()


@pytest.mark.parametrize(
    ("signature", "input_name"), [("serving_default", "examples"), ("classify", "inputs")]
)
@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([1568], r"\[0\]: the image feature holds 1568 bytes; expected 784 .*; 1 of 1 examples"),
        ([392, 392], r"\[0\]: the image feature holds 392 bytes; expected 784 .*; 2 of 2 examples"),
        ([784, 784, 783], r"\[2\]: the image feature holds 783 bytes; expected 784 .*; 1 of 3 "),
        ([784, 0], r"\[1\]: the image feature holds 0 bytes; expected 784 .*; 1 of 2 examples"),
    ],
    ids=["one-doubled-image", "two-half-images", "third-too-short", "second-empty"],
)
def test_example_signatures_check_each_examples_image(
    loaded, test_images, signature, input_name, sizes, message
):
    """An Example whose image is not exactly 784 bytes is an InvalidArgumentError naming its
    index, its byte count and the 784 expected: one doubled image never gives two answers,
    nor two half images one."""
    images, _ = test_images
    pixels = np.concatenate([images.reshape(-1)] * 2).tobytes()
    examples = [example_with_image_bytes(pixels[:size]) for size in sizes]
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(input_name) + message):
        loaded.signatures[signature](**{input_name: tf.constant(examples)})


def test_check_example_images_passes_an_empty_batch():
    """No examples: nothing to name, no error from the check itself (its message is only
    built for a failing batch)."""
    empty = tf.constant([], tf.string)
    assert check_example_images(empty, "examples").shape == (0,)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"examples\[1\]: .* 3 bytes"):
        check_example_images(tf.constant([bytes(784), bytes(3)]), "examples")


def test_unit_pixels_to_image_bytes_every_level():
    """Every level k / 255 (float32, as TF Serving's mnist_input_data computes it) maps back to
    byte k, in row-major order."""
    pixels = np.resize(np.arange(256, dtype=np.uint8), 784)
    result = unit_pixels_to_image_bytes(tf.constant(unit_pixels(pixels[None])))
    assert result.numpy()[0] == pixels.tobytes()


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


def test_pixels_to_image_bytes_batch_sizes():
    """Each row's bytes come back in its own place for an empty batch, one image and a
    batch larger than the server's (the rows differ, so a shifted cut would show)."""
    rng = np.random.default_rng(7)
    for rows in (0, 1, 33):
        pixels = rng.integers(0, 256, (rows, 784), dtype=np.uint8)
        result = pixels_to_image_bytes(tf.constant(pixels)).numpy()
        assert result.shape == (rows,)
        assert result.tolist() == [row.tobytes() for row in pixels]
        assert all(len(value) == 784 for value in result)


def test_pixels_to_image_bytes_checks_range_eagerly():
    """Called eagerly, out-of-range pixels raise the same range error."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=RANGE_MESSAGE):
        pixels_to_image_bytes(tf.constant(np.full((1, 784), 255.5, np.float32)))
