"""The embedded server's REST API, as TF Serving documents it, against a real pushed
model: status, metadata, predict in the row and columnar formats, classify, and
bad requests. The server runs in a subprocess on a free localhost port; answers
are compared with a direct ``tf.saved_model.load`` call on the same inputs.
"""

from __future__ import annotations

import base64
import concurrent.futures

import numpy as np
import pytest
import requests
import tensorflow as tf

from tests.serving_fixture import (
    CLASS_NAMES,
    MODEL_NAME,
    SHARED_VERSION,
    ServerProcess,
    exported_versions,
    mnist_images,
    serialized_example,
    shared_server,
)

VERSION = SHARED_VERSION


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    return shared_server()


@pytest.fixture(scope="module")
def direct():
    """The same SavedModel, loaded in this process."""
    return tf.saved_model.load(str(exported_versions()[0]))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return mnist_images()[0][:6]


def post(server: ServerProcess, path: str, body) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else None
    return requests.post(
        f"{server.url}/v1/models/{path}", data=data, json=None if data else body, timeout=30
    )


def direct_outputs(direct, images: np.ndarray) -> dict[str, np.ndarray]:
    outputs = direct.signatures["predict_pixels_uint8"](images=tf.constant(images))
    return {key: value.numpy() for key, value in outputs.items()}


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_model_status(server):
    """GET /v1/models/{name} and its version and label forms give TF Serving's status JSON."""
    expected = {
        "model_version_status": [
            {
                "version": str(VERSION),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    for path in (MODEL_NAME, f"{MODEL_NAME}/versions/{VERSION}", f"{MODEL_NAME}/labels/stable"):
        response = requests.get(f"{server.url}/v1/models/{path}", timeout=10)
        assert (response.status_code, response.json()) == (200, expected), path


def test_metadata_lists_signatures(server):
    """GET .../metadata gives the model spec and every signature with its dtypes and shapes."""
    response = requests.get(f"{server.url}/v1/models/{MODEL_NAME}/metadata", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": MODEL_NAME, "version": str(VERSION), "signature_name": ""}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == [
        "__saved_model_init_op",
        "classify",
        "predict_images",
        "predict_pixels",
        "predict_pixels_uint8",
        "serving_default",
    ]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert default["inputs"]["examples"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert {k: v["dtype"] for k, v in default["outputs"].items()} == {
        "classes": "DT_INT64",
        "probabilities": "DT_FLOAT",
        "class_names": "DT_STRING",
    }
    assert signatures["predict_pixels"]["inputs"]["images"]["tensor_shape"]["unknown_rank"]
    assert signatures["classify"]["method_name"] == "tensorflow/serving/classify"
    versioned = requests.get(f"{server.url}/v1/models/{MODEL_NAME}/versions/{VERSION}/metadata")
    assert versioned.json() == body


def test_predict_row_format_equals_direct_call(server, direct, images):
    """instances of 784 float pixels through predict_pixels: the direct call's outputs exactly."""
    response = post(
        server,
        f"{MODEL_NAME}:predict",
        {
            "signature_name": "predict_pixels",
            "instances": images.reshape(-1, 784).astype(float).tolist(),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == str(VERSION)
    predictions = response.json()["predictions"]
    expected = direct_outputs(direct, images)
    assert len(predictions) == len(images)
    np.testing.assert_array_equal(
        np.array([p["probabilities"] for p in predictions], np.float32), expected["probabilities"]
    )
    assert [p["classes"] for p in predictions] == expected["classes"].tolist()
    assert [p["class_names"] for p in predictions] == [CLASS_NAMES[c] for c in expected["classes"]]


def test_predict_columnar_format_uint8_28x28(server, direct, images):
    """inputs as one [N, 28, 28] uint8 tensor: outputs as a map of batched values."""
    for path in (
        f"{MODEL_NAME}:predict",
        f"{MODEL_NAME}/versions/{VERSION}:predict",
        f"{MODEL_NAME}/labels/stable:predict",
    ):
        response = post(
            server,
            path,
            {"signature_name": "predict_pixels_uint8", "inputs": {"images": images.tolist()}},
        )
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        expected = direct_outputs(direct, images)
        np.testing.assert_array_equal(
            np.array(outputs["probabilities"], np.float32), expected["probabilities"]
        )
        assert outputs["classes"] == expected["classes"].tolist()


def test_predict_serving_default_with_b64_examples(server, direct, images):
    """serving_default takes serialized tf.Examples as {"b64": ...} instances."""
    examples = [serialized_example(image) for image in images]
    response = post(server, f"{MODEL_NAME}:predict", {"instances": [b64(e) for e in examples]})
    assert response.status_code == 200, response.text
    expected = direct_outputs(direct, images)
    np.testing.assert_array_equal(
        np.array([p["probabilities"] for p in response.json()["predictions"]], np.float32),
        expected["probabilities"],
    )
    named = post(server, f"{MODEL_NAME}:predict", {"instances": [{"examples": b64(examples[0])}]})
    assert named.json()["predictions"][0]["classes"] == int(expected["classes"][0])


def test_classify_returns_label_score_pairs(server, direct, images):
    """:classify with features as JSON gives [label, score] for all ten classes per example."""
    response = post(
        server,
        f"{MODEL_NAME}:classify",
        {
            "signature_name": "classify",
            "examples": [{"image": b64(image.tobytes())} for image in images[:3]],
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = direct_outputs(direct, images[:3])["probabilities"]
    assert [[label for label, _ in row] for row in results] == [list(CLASS_NAMES)] * 3
    np.testing.assert_array_equal(
        np.array([[score for _, score in row] for row in results], np.float32), expected
    )


def test_classify_on_predict_signature_is_refused(server, images):
    """As in TF Serving, :classify needs a signature whose method is classify."""
    response = post(
        server, f"{MODEL_NAME}:classify", {"examples": [{"image": b64(images[0].tobytes())}]}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )


ONE_IMAGE = [[0.0] * 784]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            f"{MODEL_NAME}:predict",
            b'{"instances": [[1, 2]',
            400,
            "JSON Parse error: ",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "predict_pixels", "instances": [[0.0] * 783]},
            400,
            "images: expected shape [N, 28, 28] or [N, 784], got] [1 783]",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "predict_pixels", "instances": [["a"] * 784]},
            400,
            'instances (images): JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "predict_pixels_uint8", "instances": [[0.5] * 784]},
            400,
            "instances (images): JSON Value: 0.5 Type: Number is not of expected type: uint8",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "predict_pixels", "instances": ONE_IMAGE, "inputs": ONE_IMAGE},
            400,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "nope", "instances": ONE_IMAGE},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            f"{MODEL_NAME}/versions/7:predict",
            {"signature_name": "predict_pixels", "instances": ONE_IMAGE},
            404,
            f"Servable not found for request: Specific(mnist, 7); serving versions: [{VERSION}]",
        ),
        (
            "fashion:predict",
            {"instances": ONE_IMAGE},
            404,
            "Servable not found for request: Latest(fashion)",
        ),
        (
            f"{MODEL_NAME}/labels/canary:predict",
            {"instances": ONE_IMAGE},
            400,
            "Unrecognized servable version label: canary",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"instances": [{"b64": "not base64!"}]},
            400,
            "instances (examples): 'b64' value is not valid base64",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "predict_pixels", "instances": [[1.0] * 784, [1.0] * 10]},
            400,
            "instances (images): ragged or mixed nested lists",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "predict_pixels", "instances": [[300.0] * 784]},
            400,
            "images: expected pixel values in 0..255 (raw, not scaled), got min/max] [300] [300]",
        ),
        (
            f"{MODEL_NAME}:predict",
            {"signature_name": "predict_pixels", "inputs": {"pixels": ONE_IMAGE}},
            400,
            "input names do not match signature 'predict_pixels': unknown ['pixels']; "
            "missing ['images'] (it takes ['images'])",
        ),
        (f"{MODEL_NAME}:predict", {"instances": []}, 400, "No values in 'instances' array"),
        (f"{MODEL_NAME}:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
        (
            f"{MODEL_NAME}:predict",
            b'{"instances": [' + b"0," * 150_000 + b"0]}",
            413,
            "request body of 300018 bytes is larger than the limit of 200000 bytes",
        ),
    ],
    ids=[
        "malformed-json",
        "wrong-shape",
        "wrong-dtype-string",
        "wrong-dtype-fraction-for-uint8",
        "instances-and-inputs",
        "unknown-signature",
        "unknown-version",
        "unknown-model",
        "unknown-label",
        "bad-b64",
        "ragged",
        "out-of-range",
        "wrong-input-name",
        "empty-instances",
        "no-inputs",
        "oversize-body",
    ],
)
def test_bad_request_gets_status_and_error_then_server_keeps_serving(
    server, images, path, body, status, error
):
    """Each bad request gets TF Serving's status code and an error naming the problem;
    a good request right after it is answered."""
    response = post(server, path, body)
    assert response.status_code == status, response.text
    assert error in response.json()["error"]
    good = post(
        server,
        f"{MODEL_NAME}:predict",
        {"signature_name": "predict_pixels_uint8", "instances": images[:1].tolist()},
    )
    assert good.status_code == 200


def test_unknown_version_status_is_404(server):
    response = requests.get(f"{server.url}/v1/models/{MODEL_NAME}/versions/7", timeout=10)
    assert response.status_code == 404
    assert response.json() == {"error": "Could not find version 7 of model mnist"}


def test_malformed_url_is_400(server):
    """TF Serving's REST handler answers a path it cannot parse with INVALID_ARGUMENT (400);
    tests/serving/test_rest_errors.py has every case."""
    response = requests.post(f"{server.url}/v1/models/{MODEL_NAME}:explain", json={}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": f"Malformed request: POST /v1/models/{MODEL_NAME}:explain"}


def test_concurrent_single_image_requests_are_batched_with_equal_answers(server, direct):
    """32 clients at once: each gets exactly its own image's answer, and the metrics show
    joined batches (more than one row per call)."""
    all_images = mnist_images()[0][:64]
    expected = direct_outputs(direct, all_images)

    def one(index: int) -> list[float]:
        response = post(
            server,
            f"{MODEL_NAME}:predict",
            {
                "signature_name": "predict_pixels_uint8",
                "instances": all_images[index : index + 1].tolist(),
            },
        )
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["probabilities"]

    # The shared server has answered other tests before: count this burst's calls only.
    def counts() -> tuple[float, float, float]:
        metrics = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=10).text
        return (
            _metric(metrics, 'serving_batch_size_bucket{le="1.0"}'),
            _metric(metrics, "serving_batch_size_count"),
            _metric(
                metrics,
                'serving_requests_total{api="rest",code="200",method="predict",model="mnist"}',
            ),
        )

    # Requests are only joined while the model threads are busy, which depends on how
    # the machine schedules 32 threads: burst until a joined batch shows (at most 5 times).
    for _ in range(5):
        before = counts()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            got = list(pool.map(one, range(len(all_images))))
        # Joined batches have other sizes than the direct call's, and oneDNN's kernels
        # sum in a size-dependent order: equal to float rounding, not bit for bit.
        np.testing.assert_allclose(np.array(got, np.float32), expected["probabilities"], atol=1e-6)
        assert np.array(got).argmax(axis=1).tolist() == expected["classes"].tolist()
        single, total, answered = (after - was for after, was in zip(counts(), before, strict=True))
        assert answered == len(all_images)
        if single < total:
            break
    assert total < answered
    assert single < total, (single, total)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_metrics_and_health(server):
    """Health says which versions serve; metrics count requests and list loaded versions."""
    health = requests.get(f"{server.url}/healthz", timeout=10)
    assert (health.status_code, health.json()) == (
        200,
        {"status": "ok", "serving_versions": {MODEL_NAME: [VERSION]}},
    )
    metrics = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=10)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert (
        f'serving_model_version_available{{model="mnist",version="{VERSION}"}} 1.0' in metrics.text
    )
    assert 'serving_request_latency_seconds_count{api="rest",method="predict"}' in metrics.text
