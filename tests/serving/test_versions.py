"""Version lifecycle of the embedded server on a real base path: nothing pushed yet
(503), the first push, a hot swap under continuous REST and gRPC load (no failed
request, the new version answers after the swap), a broken version reported
while the old one keeps serving, and the version policy and labels.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.versions import VersionPolicy
from tests.serving_fixture import MODEL_NAME, ServerProcess, exported_versions, mnist_images, push

OLD, NEW, BROKEN = 100, 200, 300


def _rest_predict(server: ServerProcess, image: np.ndarray) -> tuple[int, int, list[float]]:
    response = requests.post(
        f"{server.url}/v1/models/{MODEL_NAME}:predict",
        json={"signature_name": "predict_images_uint8", "instances": [image.tolist()]},
        timeout=30,
    )
    version = int(response.headers.get("X-Model-Version", 0))
    body = response.json()
    probabilities = body["predictions"][0]["probabilities"] if response.ok else []
    return response.status_code, version, probabilities


class LoadClients:
    """Threads sending single-image requests without pause, REST and gRPC, recording
    (status, version) of every answer in order per client."""

    def __init__(self, server: ServerProcess, image: np.ndarray, rest: int = 3, grpc_: int = 3):
        self.server, self.image = server, image
        self.stop = threading.Event()
        self.results: list[list[tuple[str, int]]] = [[] for _ in range(rest + grpc_)]
        self.threads = [threading.Thread(target=self._rest, args=(i,)) for i in range(rest)] + [
            threading.Thread(target=self._grpc, args=(rest + i,)) for i in range(grpc_)
        ]

    def _rest(self, index: int) -> None:
        with requests.Session():
            while not self.stop.is_set():
                try:
                    status, version, _ = _rest_predict(self.server, self.image)
                    self.results[index].append((str(status), version))
                except requests.RequestException as error:
                    self.results[index].append((f"error {error}", 0))

    def _grpc(self, index: int) -> None:
        with grpc.insecure_channel(self.server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL_NAME
            request.model_spec.signature_name = "predict_images_uint8"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(self.image[None]))
            while not self.stop.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                    self.results[index].append(("200", response.model_spec.version.value))
                except grpc.RpcError as error:
                    self.results[index].append((f"{error.code()} {error.details()}", 0))

    def __enter__(self) -> LoadClients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def base_path(tmp_path_factory):
    return tmp_path_factory.mktemp("versions") / MODEL_NAME


@pytest.fixture(scope="module")
def server(base_path):
    base_path.mkdir(parents=True)
    process = ServerProcess(base_path.parent, "--model-base-path", str(base_path))
    try:
        process.wait_until(lambda: requests.get(f"{process.url}/healthz", timeout=5).status_code)
        yield process
    finally:
        process.stop()


def test_before_any_push_requests_get_503(server, base_path):
    """With no version directory yet, predict is 503 naming the path, health is 503, and the
    status has no versions (404, as TF Serving)."""
    status, _, _ = _rest_predict(server, np.zeros((28, 28), np.uint8))
    assert status == 503
    response = requests.post(
        f"{server.url}/v1/models/{MODEL_NAME}:predict", json={"instances": [[0] * 784]}
    )
    assert response.json() == {
        "error": f"Model mnist has no version loaded yet: no version directory under {base_path}"
    }
    assert requests.get(f"{server.url}/healthz").status_code == 503
    model_status = requests.get(f"{server.url}/v1/models/{MODEL_NAME}")
    assert (model_status.status_code, model_status.json()) == (
        404,
        {"error": "Could not find any versions of model mnist"},
    )


def test_first_push_is_picked_up(server, base_path):
    push(exported_versions()[0], base_path, OLD)
    server.wait_serving([OLD])
    status, version, _ = _rest_predict(server, mnist_images()[0][0])
    assert (status, version) == (200, OLD)


def test_hot_swap_under_load_fails_no_request(server, base_path):
    """Clients send requests without pause while a new version is pushed: every request
    succeeds, each client sees the old version then the new one (never back), and the
    new version's answers are the new model's."""
    image = mnist_images()[0][1]
    with LoadClients(server, image) as clients:
        time.sleep(1.5)
        push(exported_versions()[1], base_path, NEW)
        server.wait_serving([NEW])
        time.sleep(1.5)
    answers = [answer for client in clients.results for answer in client]
    failures = [answer for answer in answers if answer[0] != "200"]
    assert failures == []
    assert len(answers) > 50
    for client in clients.results:
        versions = [version for _, version in client]
        assert versions == sorted(versions), "a client saw the old version after the new one"
        assert versions[-1] == NEW
    assert {version for _, version in answers} == {OLD, NEW}

    new_model = tf.saved_model.load(str(exported_versions()[1]))
    expected = new_model.signatures["predict_images_uint8"](images=tf.constant(image[None]))
    _, version, probabilities = _rest_predict(server, image)
    assert version == NEW
    np.testing.assert_array_equal(
        np.array([probabilities], np.float32), expected["probabilities"].numpy()
    )


def test_status_after_swap_reports_old_version_ended(server):
    response = requests.get(f"{server.url}/v1/models/{MODEL_NAME}").json()
    assert [(s["version"], s["state"]) for s in response["model_version_status"]] == [
        (str(NEW), "AVAILABLE"),
        (str(OLD), "END"),
    ]


def test_broken_version_is_reported_and_old_keeps_serving(server, base_path):
    """A version directory that is no SavedModel fails to load: status END with the error,
    the previous version keeps answering."""
    broken = base_path / str(BROKEN)
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL_NAME
        request.model_spec.version.value = BROKEN
        server.wait_until(
            lambda: _state(stub, request) == get_model_status_pb2.ModelVersionStatus.END,
            what="reporting the broken version",
        )
        [status] = stub.GetModelStatus(request, timeout=10).model_version_status
    assert status.status.error_code == grpc.StatusCode.UNKNOWN.value[0]
    assert status.status.error_message.startswith("failed to load: ")
    assert server.serving_versions() == [NEW]
    assert _rest_predict(server, mnist_images()[0][0])[:2] == (200, NEW)
    direct = requests.post(
        f"{server.url}/v1/models/{MODEL_NAME}/versions/{BROKEN}:predict",
        json={"instances": [[0] * 784]},
    )
    assert direct.status_code == 404
    assert direct.json()["error"].startswith(
        f"Servable not found for request: Specific(mnist, {BROKEN}) (failed to load: "
    )


def _state(stub, request) -> int | None:
    try:
        return stub.GetModelStatus(request, timeout=10).model_version_status[0].state
    except grpc.RpcError:
        return None


def test_policy_all_and_labels(tmp_path):
    """--version-policy all serves both versions; labels route to the one they name."""
    base = tmp_path / MODEL_NAME
    push(exported_versions()[0], base, OLD)
    push(exported_versions()[1], base, NEW)
    process = ServerProcess(
        tmp_path,
        "--model-base-path", str(base), "--version-policy", "all",
        "--label", f"stable={OLD}", "--label", f"canary={NEW}",
    )  # fmt: skip
    try:
        process.wait_serving([OLD, NEW])
        body = {"signature_name": "predict_images_uint8", "instances": [[0] * 784]}
        for label, version in (("stable", OLD), ("canary", NEW)):
            response = requests.post(
                f"{process.url}/v1/models/{MODEL_NAME}/labels/{label}:predict", json=body
            )
            assert response.headers["X-Model-Version"] == str(version)
        latest = requests.post(f"{process.url}/v1/models/{MODEL_NAME}:predict", json=body)
        assert latest.headers["X-Model-Version"] == str(NEW)
    finally:
        process.stop()


def test_version_policy_selects():
    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy("latest", num_latest=2).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy("all").select([3, 1]) == [1, 3]
    assert VersionPolicy("specific", versions=(1, 9)).select([3, 1]) == [1]
    with pytest.raises(
        ValueError, match="version policy 'newest': expected one of latest, all, specific"
    ):
        VersionPolicy("newest")
