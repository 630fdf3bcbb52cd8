"""``mnist-tfx monitor`` on real traffic: a real server (``serving.server``) of a CNN
trained on MNIST fixture images logs every request (rate 1.0); 500 MNIST images (the
fixture's 300 training and 200 test images, real MNIST digits) sent through three
signatures give no skew, then 500 Fashion-MNIST images (the Fashion fixture's) give
skew from the training data and drift from the previous (MNIST) window, each named
with its feature and distance; the page and JSON are written; an empty window, no log
files and a corrupt file each get their message."""

from __future__ import annotations

import json
import shutil
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import tf_keras as keras
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components.data_validator.profile import DataProfile
from ingest.idx import read_idx_pair
from serving.publish import publish_saved_model
from tests.pipeline_fixture import FIXTURES, run_cli
from tests.serving_fixture import CLASS_NAMES, REPO, ServerProcess
from tests.transform_fixture import build_transform_output
from trainer import export
from trainer.hparams import HParams
from trainer.model import build_model
from trainer.model_fn import IMAGE_KEY, cnn_model_fn

VERSION = 3


def fixture_images(dataset: str) -> np.ndarray:
    """The fixture's 300 training and 200 test images of ``dataset``, uint8 [500, 28, 28]."""
    parts = [
        read_idx_pair(
            FIXTURES / dataset / f"{split}-images-idx3-ubyte.gz",
            FIXTURES / dataset / f"{split}-labels-idx1-ubyte.gz",
        )
        for split in ("train", "t10k")
    ]
    return np.concatenate([images for images, _ in parts])


def served_version(root):
    """The CNN trained 8 epochs on the 300 MNIST fixture training images, exported as
    the Trainer exports it, with the profile of its training data as the Trainer stores
    it (``write_data_contract``), pushed as VERSION."""
    images, labels = read_idx_pair(
        FIXTURES / "mnist" / "train-images-idx3-ubyte.gz",
        FIXTURES / "mnist" / "train-labels-idx1-ubyte.gz",
    )
    tft_output = build_transform_output(root / "transform", images, labels)
    keras.utils.set_random_seed(0)
    model = build_model(cnn_model_fn, HParams().to_params())
    model.fit(
        {IMAGE_KEY: images.astype(np.float32)[..., None] / np.float32(255)},
        labels.astype(np.int64),
        batch_size=30,
        epochs=8,
        verbose=0,
    )
    exported = root / "export"
    export.export_serving_model(model, tft_output, str(exported), CLASS_NAMES)
    profile = DataProfile()
    profile.add_images(images.reshape(-1, 784), labels)
    export.write_data_contract(str(exported), None, profile)
    publish_saved_model(exported, root / "models" / "mnist", now=VERSION)
    return root / "models" / "mnist"


def send(server: ServerProcess, images: np.ndarray) -> None:
    """The images in three ways: REST predict_pixels_uint8 (rows of 20), gRPC
    predict_images (float [N, 784] / 255, 10 per call) and REST classify (Examples)."""
    third = len(images) // 3
    rest, rpc, examples = images[:third], images[third : 2 * third], images[2 * third :]
    for start in range(0, len(rest), 20):
        response = requests.post(
            f"{server.url}/v1/models/mnist:predict",
            json={
                "signature_name": "predict_pixels_uint8",
                "instances": rest[start : start + 20].tolist(),
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for start in range(0, len(rpc), 10):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mnist"
            request.model_spec.signature_name = "predict_images"
            unit = rpc[start : start + 10].reshape(-1, 784).astype(np.float32) / 255.0
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(unit))
            stub.Predict(request, timeout=60)
    import base64

    for start in range(0, len(examples), 20):
        batch = examples[start : start + 20]
        response = requests.post(
            f"{server.url}/v1/models/mnist:classify",
            json={
                "signature_name": "classify",
                "examples": [
                    {"image": {"b64": base64.b64encode(image.tobytes()).decode()}}
                    for image in batch
                ],
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """MNIST then Fashion-MNIST traffic through a logging server; the times around each."""
    root = tmp_path_factory.mktemp("monitor")
    base_path = served_version(root)
    prefix = root / "logs" / "requests"
    (root / "logging.config").write_text(
        f'log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }} '
        "sampling_config { sampling_rate: 1.0 }"
    )
    server = ServerProcess(
        root, "--model-base-path", str(base_path),
        "--logging-config", str(root / "logging.config"),
        "--logging-max-records-per-file", "20",
    )  # fmt: skip
    times = {}
    try:
        server.wait_serving([VERSION])
        times["mnist"] = [time.time()]
        send(server, fixture_images("mnist"))
        times["mnist"].append(time.time())
        time.sleep(1.5)
        times["fashion"] = [time.time()]
        send(server, fixture_images("fashion_mnist"))
        times["fashion"].append(time.time())
    finally:
        server.stop()
    return root, base_path, prefix, times


def monitor(root, base_path, prefix, start, end, *extra):
    """`mnist-tfx monitor` over [floor(start), floor(end) + 1)."""
    until = int(end) + 1
    return run_cli(
        "monitor", "--log-prefix", str(prefix), "--model-base-path", str(base_path),
        "--until", str(until), "--window-seconds", str(until - int(start)), *extra,
        cwd=REPO,
    )  # fmt: skip


def test_mnist_traffic_shows_no_skew(traffic):
    root, base_path, prefix, times = traffic
    done = monitor(root, base_path, prefix, *times["mnist"], "--report-dir", str(root / "r1"))
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    facts = json.loads((root / "r1" / "monitor.json").read_text())
    assert facts["images"] == 500 and facts["versions"] == {str(VERSION): 500}
    assert facts["signatures"] == {
        "classify": 168,
        "predict_images": 166,
        "predict_pixels_uint8": 166,
    }
    assert facts["training_examples"] == 300 and facts["previous_images"] == 0
    skew = {f["feature"]: f for f in facts["findings"] if f["kind"] == "skew"}
    assert set(skew) == {"image_mean_intensity", "image_ink_fraction", "label"}
    assert not any(f["beyond"] for f in facts["findings"])
    assert skew["image_mean_intensity"]["distance"] < 0.02
    assert skew["image_ink_fraction"]["distance"] < 0.02
    assert abs(facts["served_means"]["image_mean_intensity"] - 0.13) < 0.02
    assert "verdict: no skew or drift beyond the bounds" in done.stdout
    assert "drift not measured: no logged requests in the previous window" in done.stdout


def test_fashion_traffic_is_reported_as_skew_and_drift_by_feature(traffic):
    root, base_path, prefix, times = traffic
    # The window starts with the Fashion traffic and reaches past it (nothing is logged
    # there) far enough that the previous window of the same length holds all the MNIST
    # traffic, however fast each phase ran.
    start, end = times["fashion"]
    end = max(end, start + (start - times["mnist"][0]) + 1)
    done = monitor(root, base_path, prefix, start, end, "--report-dir", str(root / "r2"))
    print(done.stdout)
    assert done.returncode == 6, done.stdout + done.stderr
    facts = json.loads((root / "r2" / "monitor.json").read_text())
    assert facts["images"] == 500 and facts["beyond"] is True
    assert facts["previous_images"] == 500  # the MNIST traffic before it
    found = {(f["kind"], f["feature"]): f for f in facts["findings"]}
    for feature in ("image_mean_intensity", "image_ink_fraction"):
        for kind in ("skew", "drift"):
            assert found[(kind, feature)]["beyond"], found[(kind, feature)]
            assert found[(kind, feature)]["distance"] > 0.2
            assert found[(kind, feature)]["measure"] == "Jensen-Shannon divergence"
    distance = found[("skew", "image_mean_intensity")]["distance"]
    assert (
        f"skew: image_mean_intensity vs the training data: Jensen-Shannon divergence "
        f"{distance:.4f}, bound 0.1: BEYOND the bound"
    ) in done.stdout
    page = (root / "r2" / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert "http://" not in page and "https://" not in page
    assert "beyond their bounds" in page


def test_a_window_without_requests_and_missing_logs_are_told_apart(traffic, tmp_path):
    root, base_path, prefix, times = traffic
    early = times["mnist"][0] - 7200
    done = monitor(root, base_path, prefix, early - 600, early)
    assert done.returncode == 7
    assert done.stdout.startswith("no logged requests between ")
    assert "records outside the window, 0 corrupt file(s) skipped" in done.stdout
    done = monitor(root, base_path, tmp_path / "nothing", early - 600, early)
    assert done.returncode == 7
    assert f"no file matches {tmp_path / 'nothing'}.*.tfrecord" in done.stdout


def test_a_corrupt_log_file_is_skipped_and_counted(traffic, tmp_path):
    root, base_path, prefix, times = traffic
    copy = tmp_path / "logs"
    shutil.copytree(prefix.parent, copy)
    (copy / "requests.20000101T000000Z.1.00001.tfrecord").write_bytes(b"not a record" * 9)
    done = monitor(
        root, base_path, copy / "requests", *times["mnist"], "--report-dir", str(tmp_path / "r")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped 1 corrupt log file(s)" in done.stdout
    assert json.loads((tmp_path / "r" / "monitor.json").read_text())["images"] == 500


def test_bad_flags_are_one_line_errors(traffic):
    root, base_path, prefix, times = traffic
    done = run_cli("monitor", "--log-prefix", str(prefix), "--window-seconds", "0", cwd=REPO)
    assert done.returncode == 2
    assert "--window-seconds: expected > 0, got 0" in done.stderr
    done = monitor(root, root / "no-models", prefix, *times["mnist"])
    assert done.returncode == 2
    assert f"version {VERSION} under {root / 'no-models'} carries no training-data profile" in (
        done.stderr
    )
