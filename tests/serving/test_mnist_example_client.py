"""TF Serving conformance of our pushed MNIST model: TF Serving's own MNIST example client
works against it unchanged, and malformed input is refused with a message that reaches
the client, never answered.

The model is ours, exported by ``trainer.export.export_serving_model`` (the CNN trained
briefly, ``tests/serving_fixture.py``), pushed and served by ``python -m serving.server``.
The client is ``bench/mnist_example_client.py``, which does what
``tensorflow_serving/example/mnist_client.py`` does: gRPC ``Predict`` for model ``mnist``,
signature ``predict_images``, ``inputs['images']`` = ``tf.make_tensor_proto(image,
shape=[1, image.size])`` with float pixels in [0, 1], a bounded number of requests in
flight counted by a result counter, and the argmax of ``outputs['scores'].float_val``.
Over the 200 committed test images its error rate must be the model's own, computed
through ``serving_default`` on the same images (the model is trained only briefly, so no
fixed accuracy is asserted).
"""

from __future__ import annotations

import base64
import concurrent.futures
import importlib.util
import sys

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving_fixture import (
    MODEL_NAME,
    REPO,
    exported_versions,
    mnist_images,
    serialized_example,
    shared_server,
)

# What a client sees for each malformed input, through REST and gRPC alike.
DOUBLED_IMAGE = (
    "assertion failed: [examples[0]: the image feature holds 1568 bytes; expected 784 "
    "(28 x 28 uint8 pixels, one image per example); 1 of 1 examples malformed]"
)
HALF_IMAGES = (
    "assertion failed: [examples[0]: the image feature holds 392 bytes; expected 784 "
    "(28 x 28 uint8 pixels, one image per example); 2 of 2 examples malformed]"
)
RAW_PIXELS_TO_PREDICT_IMAGES = (
    "assertion failed: [images: expected pixel values in [0, 1] (uint8 pixels / 255, as the "
    "TF Serving MNIST example sends them; send raw 0..255 pixels to predict_pixels), "
    "got min/max] [0] [255]"
)
IMAGES_OF_28_BY_28 = "assertion failed: [images: expected shape [N, 784], got] [1 28 28]"
PIXELS_OF_1568 = "assertion failed: [images: expected shape [N, 28, 28] or [N, 784], got] [1 1568]"


@pytest.fixture(scope="module")
def client():
    path = REPO / "bench" / "mnist_example_client.py"
    spec = importlib.util.spec_from_file_location("mnist_example_client", path)
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclass looks its module up while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_images("t10k")
    assert len(images) == 200
    return images, labels.astype(np.int64)


@pytest.fixture(scope="module")
def own_answers(test_set) -> dict[str, np.ndarray]:
    """The served model's own answers through serving_default, called in this process."""
    images, labels = test_set
    loaded = tf.saved_model.load(str(exported_versions()[0]))
    examples = [serialized_example(im, lb) for im, lb in zip(images, labels, strict=True)]
    outputs = loaded.signatures["serving_default"](examples=tf.constant(examples))
    return {key: value.numpy() for key, value in outputs.items()}


def test_example_pixels_are_mnist_input_datas(client, test_set):
    """The client's pixels are what mnist_input_data gives: float32 [n, 784], uint8 / 255."""
    images, _ = test_set
    pixels = client.example_pixels(images)
    assert (pixels.dtype, pixels.shape) == (np.float32, (200, 784))
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    np.testing.assert_array_equal(np.round(pixels * 255).astype(np.uint8), images.reshape(200, -1))


@pytest.mark.parametrize("concurrency", [1, 8])
def test_mnist_example_client_error_rate_is_the_models_own(
    client, server, test_set, own_answers, concurrency
):
    """TF Serving's example client over the 200 test images: every request answered with 10
    scores summing to 1, each image's class that of serving_default, and the same error rate."""
    images, labels = test_set
    result = client.do_inference(
        server.grpc_target, images, labels, concurrency, MODEL_NAME, timeout=30.0
    )
    assert result.failures == []
    assert result.scores.shape == (200, 10)
    np.testing.assert_allclose(result.scores.sum(axis=1), np.ones(200), atol=1e-5)
    # Concurrent requests are joined into batches of other sizes than the direct call's:
    # equal to float rounding, not bit for bit.
    np.testing.assert_allclose(result.scores, own_answers["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(result.scores.argmax(axis=1), own_answers["classes"])
    own_error_rate = float(np.mean(own_answers["classes"] != labels))
    assert result.error_rate == own_error_rate
    assert 0.0 <= result.error_rate < 0.9  # trained briefly, but better than chance


def test_a_failed_request_counts_as_an_error(client, server, test_set):
    """As in the example: a request the server refuses (here an unknown model) is counted
    wrong and reported, and the client still finishes."""
    images, labels = test_set
    result = client.do_inference(server.grpc_target, images[:3], labels[:3], 2, "no_such_model")
    assert result.error_rate == 1.0
    assert len(result.failures) == 3
    assert all("NOT_FOUND" in failure for failure in result.failures)
    assert np.isnan(result.scores).all()


# --- malformed input, through the server ---------------------------------------------


def grpc_predict(server, signature: str, key: str, tensor) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tensor)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=30)


def example_with_image_bytes(data: bytes) -> bytes:
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    example = tf.train.Example(features=tf.train.Features(feature={"image": feature}))
    return example.SerializeToString()


def malformed_requests(images: np.ndarray) -> dict[str, tuple[str, str, np.ndarray, str]]:
    """name -> (signature, input key, input array, the message a client must see)."""
    two = images[:2].reshape(-1).tobytes()
    raw = np.zeros((1, 784), np.float32)
    raw[0, 0] = 255.0
    return {
        "one-example-two-images": (
            "serving_default",
            "examples",
            np.array([example_with_image_bytes(two)], dtype=object),
            DOUBLED_IMAGE,
        ),
        "two-examples-half-images": (
            "serving_default",
            "examples",
            np.array([example_with_image_bytes(two[:392])] * 2, dtype=object),
            HALF_IMAGES,
        ),
        "raw-pixels-to-predict-images": (
            "predict_images",
            "images",
            raw,
            RAW_PIXELS_TO_PREDICT_IMAGES,
        ),
        "28x28-to-predict-images": (
            "predict_images",
            "images",
            images[:1].astype(np.float32) / 255,
            IMAGES_OF_28_BY_28,
        ),
        "1568-pixels-to-predict-pixels-uint8": (
            "predict_pixels_uint8",
            "images",
            images[:2].reshape(1, -1),
            PIXELS_OF_1568,
        ),
    }


MALFORMED = list(malformed_requests(np.zeros((2, 28, 28), np.uint8)))


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_input_is_invalid_argument_over_grpc(server, test_set, name):
    """Each malformed input is INVALID_ARGUMENT with the graph's message, clean of TF's op
    decoration; the server keeps answering."""
    signature, key, array, message = malformed_requests(test_set[0])[name]
    proto = tf.make_tensor_proto(array, dtype=tf.string if array.dtype == object else None)
    with pytest.raises(grpc.RpcError) as caught:
        grpc_predict(server, signature, key, proto)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == message
    good = tf.make_tensor_proto(test_set[0][:1].reshape(1, 784).astype(np.float32) / 255)
    assert (
        len(grpc_predict(server, "predict_images", "images", good).outputs["scores"].float_val)
        == 10
    )


def rest_value(array: np.ndarray) -> list:
    if array.dtype == object:
        return [{"b64": base64.b64encode(value).decode()} for value in array]
    return array.tolist()


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_input_is_400_over_rest(server, test_set, name):
    """The same inputs through REST's columnar format: 400 with the same message."""
    signature, key, array, message = malformed_requests(test_set[0])[name]
    response = requests.post(
        f"{server.url}/v1/models/{MODEL_NAME}:predict",
        json={"signature_name": signature, "inputs": {key: rest_value(array)}},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"error": message}


def test_rest_classify_refuses_an_example_holding_two_images(server, test_set):
    """classify checks each example's image the same way (its input is named ``inputs``)."""
    two = test_set[0][:2].reshape(-1).tobytes()
    response = requests.post(
        f"{server.url}/v1/models/{MODEL_NAME}:classify",
        json={
            "signature_name": "classify",
            "examples": [{"image": {"b64": base64.b64encode(two).decode()}}],
        },
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"error": DOUBLED_IMAGE.replace("[examples[0]", "[inputs[0]")}


def test_one_malformed_request_among_concurrent_good_ones(server, test_set, own_answers):
    """A doubled image sent while good requests are in flight (and may share its batch) is
    refused alone; every good request gets its own image's answer."""
    images, labels = test_set
    bad = example_with_image_bytes(images[:2].reshape(-1).tobytes())

    def call(index: int):
        example = bad if index == 5 else serialized_example(images[index], labels[index])
        proto = tf.make_tensor_proto([example], dtype=tf.string)
        try:
            return grpc_predict(server, "serving_default", "examples", proto)
        except grpc.RpcError as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(24)))
    for index, result in enumerate(results):
        if index == 5:
            assert isinstance(result, grpc.RpcError)
            assert result.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert result.details() == DOUBLED_IMAGE
            continue
        assert not isinstance(result, grpc.RpcError), result
        probabilities = tf.make_ndarray(result.outputs["probabilities"])
        assert probabilities.shape == (1, 10)
        np.testing.assert_allclose(probabilities[0], own_answers["probabilities"][index], atol=1e-5)
