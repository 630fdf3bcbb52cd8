"""Version lifecycle of the embedded server on a real base path: nothing pushed yet
(503), the first push, a hot swap under continuous REST and gRPC load (no failed
request, the new version answers after the swap), a broken version retried and
then reported while the old one keeps serving, and the version policy and labels.

In process, with a stand-in loader: version directory names read as TF Serving
reads them, duplicates, odd and unreadable children logged once, load retries with
their interval and cancellation, and a watcher thread that outlives whatever its
base path does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

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

from serving import versions as versions_module
from serving.server import build_parser, config_from_args
from serving.versions import (
    BasePathScanner,
    ModelConfig,
    ModelRegistry,
    RetryPolicy,
    ServedModel,
    VersionPolicy,
    VersionState,
    parse_version_name,
)
from tests.serving_fixture import MODEL_NAME, ServerProcess, exported_versions, mnist_images, push

OLD, NEW, BROKEN = 100, 200, 300


def _rest_predict(server: ServerProcess, image: np.ndarray) -> tuple[int, int, list[float]]:
    response = requests.post(
        f"{server.url}/v1/models/{MODEL_NAME}:predict",
        json={"signature_name": "predict_pixels_uint8", "instances": [image.tolist()]},
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
            request.model_spec.signature_name = "predict_pixels_uint8"
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
    process = ServerProcess(
        base_path.parent,
        "--model-base-path", str(base_path),
        "--max-num-load-retries", "1", "--load-retry-interval-seconds", "0.2",
    )  # fmt: skip
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
    expected = new_model.signatures["predict_pixels_uint8"](images=tf.constant(image[None]))
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
    """A version directory that is no SavedModel fails to load, is retried once (the
    server's --max-num-load-retries 1) and then reported END with the error; the previous
    version keeps answering throughout."""
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
    assert f"mnist version {BROKEN} failed to load (retry 1 of 1 in 0.2 s" in server.log()
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
        body = {"signature_name": "predict_pixels_uint8", "instances": [[0] * 784]}
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


# --- In process: the watcher with a stand-in loader ---------------------------------------


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("123", 123),
        ("00000123", 123),
        ("0", 0),
        ("+5", 5),
        ("-1", -1),
        (" 7\t\n", 7),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", None),
        ("²", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits: int() takes them, TF Serving does not
        ("1_000", None),
        ("1e3", None),
        ("0x10", None),
        ("- 1", None),
        ("+-1", None),
        ("abc", None),
        (".incoming-1700000000", None),
        ("", None),
        (" ", None),
    ],
)
def test_version_names_parse_as_tf_serving_parses_them(name, version):
    """absl::SimpleAtoi into an int64, as TF Serving's file system source parses them."""
    assert parse_version_name(name) == version


def _dirs(base: Path, *names: str) -> None:
    for name in names:
        (base / name).mkdir(parents=True)


def test_scan_keeps_paths_as_found_and_logs_odd_children_once(tmp_path, caplog):
    """00000123 is version 123 at its own path; of 0124 and 124 the last in byte order wins,
    as in TF Serving; names that are no number, files and dangling links are skipped, each
    logged once however often the base path is read."""
    _dirs(tmp_path, "00000123", "0124", "124", "abc", "²", ".incoming-5")
    (tmp_path / "9").write_text("not a directory")
    os.symlink(tmp_path / "missing", tmp_path / "10")
    scanner = BasePathScanner(tmp_path)
    with caplog.at_level(logging.INFO, logger="serving.versions"):
        for _ in range(3):
            scan = scanner.scan()
    assert scan.versions == {123: tmp_path / "00000123", 124: tmp_path / "124"}
    assert scan.unreadable == frozenset()
    messages = [record.getMessage() for record in caplog.records]
    assert (
        messages.count(
            "Duplicate version directories detected. Version 124 will be loaded from 124, "
            "0124 will be ignored."
        )
        == 1
    )
    for name in ("abc", "²", ".incoming-5"):
        assert messages.count(f"skipping {tmp_path / name}: not a version number") == 1
    assert messages.count(f"skipping {tmp_path / '9'}: not a directory") == 1
    assert sum(m.startswith(f"skipping {tmp_path / '10'}: ") for m in messages) == 1
    assert len(messages) == 6


class StandInLoader:
    """Loads instantly; versions in ``failing`` raise. Records every call."""

    def __init__(self, failing: set[int] | None = None) -> None:
        self.failing = failing or set()
        self.calls: list[int] = []

    def __call__(self, name: str, version: int, path: str):
        self.calls.append(version)
        if version in self.failing:
            raise RuntimeError(f"cannot load {path}")
        return SimpleNamespace(model_name=name, version=version, path=path)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _served(base: Path, retries: int = 2, interval: float = 10.0) -> ServedModel:
    return ServedModel(ModelConfig("m", base), RetryPolicy(retries, interval))


def _served_state(served: ServedModel, version: int) -> tuple[VersionState, str]:
    status = served.statuses[version]
    return status.state, status.error_message


def test_failed_load_is_retried_at_intervals_then_ended(tmp_path):
    """1 + max_num_load_retries tries, load_retry_interval_s apart, LOADING in between, END
    with the error after; the old version serves throughout; gone and pushed again, the
    version is tried afresh."""
    _dirs(tmp_path, "1")
    served, loader, clock = _served(tmp_path), StandInLoader({2}), Clock()
    served.poll(loader, clock)
    _dirs(tmp_path, "2")
    for now, calls, state in [
        (0.0, [1, 2], VersionState.LOADING),
        (9.9, [1, 2], VersionState.LOADING),
        (10.0, [1, 2, 2], VersionState.LOADING),
        (20.0, [1, 2, 2, 2], VersionState.END),
        (99.0, [1, 2, 2, 2], VersionState.END),
    ]:
        clock.now = now
        served.poll(loader, clock)
        assert (loader.calls, served.statuses[2].state) == (calls, state), now
        assert sorted(served.serving) == [1]
    assert _served_state(served, 2) == (
        VersionState.END,
        f"failed to load: cannot load {tmp_path / '2'}",
    )
    assert served.resolve().version == 1
    (tmp_path / "2").rmdir()
    served.poll(loader, clock)
    _dirs(tmp_path, "2")
    loader.failing.clear()
    served.poll(loader, clock)
    assert sorted(served.serving) == [2]
    assert [_served_state(served, v)[0] for v in (1, 2)] == [
        VersionState.END,
        VersionState.AVAILABLE,
    ]


def test_retries_stop_when_the_version_is_no_longer_wanted(tmp_path):
    """A newer version makes the failing one unwanted: its retries are cancelled (END with
    its error) and the newer one replaces the old."""
    _dirs(tmp_path, "1")
    served, loader, clock = _served(tmp_path), StandInLoader({2}), Clock()
    served.poll(loader, clock)
    _dirs(tmp_path, "2")
    served.poll(loader, clock)
    _dirs(tmp_path, "3")
    clock.now = 100.0
    served.poll(loader, clock)
    assert loader.calls == [1, 2, 3]
    assert sorted(served.serving) == [3]
    assert _served_state(served, 2)[0] == VersionState.END
    assert _served_state(served, 2)[1].startswith("failed to load: ")


def test_zero_retries_end_at_the_first_failure(tmp_path):
    _dirs(tmp_path, "1")
    served, loader = _served(tmp_path, retries=0), StandInLoader({1})
    served.poll(loader)
    served.poll(loader)
    assert loader.calls == [1]
    assert _served_state(served, 1)[0] == VersionState.END
    with pytest.raises(Exception, match="every version failed to load"):
        served.resolve()


def test_unreadable_directory_waits_and_keeps_the_old_version(tmp_path, monkeypatch, caplog):
    """A version directory that cannot be listed is not loaded (logged once) and does not
    push the served version out; once readable it loads. A served version whose directory
    turns unreadable keeps serving."""
    _dirs(tmp_path, "1", "2")
    blocked = {str(tmp_path / "2")}
    real_listdir = os.listdir

    def listdir(path="."):
        if str(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(versions_module.os, "listdir", listdir)
    served, loader = _served(tmp_path), StandInLoader()
    with caplog.at_level(logging.WARNING, logger="serving.versions"):
        for _ in range(3):
            served.poll(loader)
    assert loader.calls == [1]
    assert sorted(served.serving) == [1]
    assert [r.getMessage() for r in caplog.records] == [
        f"not loading {tmp_path / '2'} until it can be read: "
        f"[Errno 13] Permission denied: '{tmp_path / '2'}'"
    ]
    blocked.clear()
    served.poll(loader)
    assert loader.calls == [1, 2]
    assert sorted(served.serving) == [2]
    blocked.add(str(tmp_path / "2"))
    served.poll(loader)
    assert sorted(served.serving) == [2]


def test_watcher_thread_outlives_its_base_path(tmp_path, monkeypatch, caplog):
    """No base path yet, a loader raising anything, a scan raising what no directory should:
    each is logged once while it repeats, and the watcher goes on to serve what comes next."""
    base = tmp_path / "m"
    loader = StandInLoader({1})
    registry = ModelRegistry([ModelConfig("m", base)], 0.02, loader, RetryPolicy(0, 0.0))
    served = registry.models["m"]

    def wait_for(predicate, what: str) -> None:
        deadline = time.monotonic() + 30
        while not predicate():
            assert registry._thread.is_alive(), "the watcher thread died"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    with caplog.at_level(logging.INFO, logger="serving.versions"):
        registry.start()
        try:
            time.sleep(0.2)
            _dirs(base, "1")
            wait_for(lambda: 1 in served.statuses, "version 1 to fail")
            real_scan = served.scanner.scan
            monkeypatch.setattr(
                served.scanner, "scan", lambda: (_ for _ in ()).throw(RecursionError("deep"))
            )
            time.sleep(0.2)
            monkeypatch.setattr(served.scanner, "scan", real_scan)
            _dirs(base, "2")
            wait_for(lambda: sorted(served.serving) == [2], "version 2 to serve")
        finally:
            registry.stop()
    messages = [record.getMessage() for record in caplog.records]
    missing = [m for m in messages if m.startswith(f"cannot poll {base} for model m: ")]
    assert missing[0].startswith(
        f"cannot poll {base} for model m: FileNotFoundError: [Errno 2] No such file"
    )
    assert messages.count(f"cannot poll {base} for model m: RecursionError: deep") == 1
    assert len(missing) == 2
    assert _served_state(served, 1) == (
        VersionState.END,
        f"failed to load: cannot load {base / '1'}",
    )


def test_retry_flags():
    """--max-num-load-retries and --load-retry-interval-seconds, TF Serving's defaults."""
    parse = build_parser().parse_args
    assert config_from_args(parse([])).retry == RetryPolicy(5, 60.0)
    config = config_from_args(
        parse(["--max-num-load-retries", "0", "--load-retry-interval-seconds", "0.5"])
    )
    assert config.retry == RetryPolicy(0, 0.5)
    with pytest.raises(ValueError, match="max load retries must be >= 0, got -1"):
        config_from_args(parse(["--max-num-load-retries", "-1"]))
    with pytest.raises(ValueError, match="load retry interval must be >= 0 seconds, got -2"):
        config_from_args(parse(["--load-retry-interval-seconds", "-2"]))
