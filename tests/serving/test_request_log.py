"""Request logging (serving/request_log.py): TF Serving's LoggingConfig in, TF
Serving's PredictionLog records out, in rotated TFRecord files written off the
request path; and the server wired to it (``--logging-config``, a models.config
``logging_config``, a log directory that cannot be written)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from ingest.convert import image_to_example
from serving import request_log
from tests.serving_fixture import (
    MODEL_NAME,
    REPO,
    ServerProcess,
    exported_versions,
    mnist_images,
    push,
)

SERVABLE = SimpleNamespace(model_name="mnist", version=7)


def config(prefix, rate: float = 1.0):
    return request_log.parse_logging_config(
        f'log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }} '
        f"sampling_config {{ sampling_rate: {rate} }}",
        "test",
    )


# --- the LoggingConfig ------------------------------------------------------------------


def test_a_logging_config_is_read_as_tf_serving_writes_it(tmp_path):
    path = tmp_path / "logging.config"
    path.write_text(
        'log_collector_config {\n  type: ""\n  filename_prefix: "/var/log/mnist/requests"\n}\n'
        "sampling_config {\n  sampling_rate: 0.1\n}\n"
    )
    parsed = request_log.read_logging_config(path)
    assert parsed.log_collector_config.filename_prefix == "/var/log/mnist/requests"
    assert parsed.sampling_config.sampling_rate == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'log_collector_config { type: "kafka" filename_prefix: "/x/r" }',
            'log_collector_config.type "kafka" is not known; expected "tfrecord"',
        ),
        ("sampling_config { sampling_rate: 0.5 }", "log_collector_config.filename_prefix is empty"),
        (
            'log_collector_config { filename_prefix: "s3://bucket/r" }',
            'filename_prefix "s3://bucket/r" is a URL; expected a local path',
        ),
        (
            'log_collector_config { filename_prefix: "/x/r" } '
            "sampling_config { sampling_rate: 1.5 }",
            "sampling_config.sampling_rate is 1.5; expected 0.0 to 1.0",
        ),
        ("log_collector_config { filename_prefx: 1 }", "has no field named"),
    ],
)
def test_a_config_this_server_cannot_honour_is_refused_by_name(tmp_path, text, message):
    path = tmp_path / "logging.config"
    path.write_text(text)
    with pytest.raises(ValueError, match="--logging-config .*logging.config: ") as raised:
        request_log.read_logging_config(path)
    assert message in str(raised.value)


# --- the writer -------------------------------------------------------------------------


def predict_entry(index: int) -> request_log._Entry:
    image = np.full((1, 28, 28), index, dtype=np.uint8)
    scores = np.eye(10, dtype=np.float32)[[index % 10]]
    return request_log._Entry(
        "predict", "mnist", 7, "predict_pixels_uint8", 1_700_000_000.0 + index,
        inputs={"images": image}, outputs={"probabilities": scores},
    )  # fmt: skip


def test_records_are_prediction_logs_in_files_rotated_by_count(tmp_path):
    """Seven records with at most three per file: files of 3, 3 and 1 records, whole
    (no ``.part`` left), each record TF Serving's PredictionLog with the request's
    image, the response's scores, the version and the sampling config."""
    prefix = str(tmp_path / "logs" / "requests")
    logger = request_log.RequestLogger(config(prefix), max_records_per_file=3)
    logger.start()
    for index in range(7):
        logger.submit(predict_entry(index))
    logger.close()
    files = request_log.log_files(prefix)
    assert len(files) == 3 and not list((tmp_path / "logs").glob("*.part"))
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files]
    assert sizes == [3, 3, 1]
    result = request_log.read_prediction_logs(prefix)
    assert (result.files, result.corrupt_files, len(result.records)) == (3, [], 7)
    for index, record in enumerate(result.records):
        raw = record.SerializeToString()
        record = prediction_log_pb2.PredictionLog.FromString(raw)
        assert record.WhichOneof("log_type") == "predict_log"
        meta = record.log_metadata
        assert (meta.model_spec.name, meta.model_spec.version.value) == ("mnist", 7)
        assert meta.model_spec.signature_name == "predict_pixels_uint8"
        assert meta.timestamp_secs == 1_700_000_000 + index
        assert meta.sampling_config.sampling_rate == 1.0
        assert list(meta.saved_model_tags) == ["serve"]
        image = tf.make_ndarray(record.predict_log.request.inputs["images"])
        assert image.shape == (1, 28, 28) and image.dtype == np.uint8 and image.max() == index
        scores = tf.make_ndarray(record.predict_log.response.outputs["probabilities"])
        assert int(scores.argmax()) == index % 10
        assert record.predict_log.response.model_spec.version.value == 7
    assert logger.counts.written == 7 and logger.counts.dropped == logger.counts.failed == 0


def test_an_idle_file_is_closed_after_the_rotation_interval(tmp_path):
    prefix = str(tmp_path / "requests")
    logger = request_log.RequestLogger(config(prefix), rotate_seconds=0.3)
    logger.start()
    logger.submit(predict_entry(1))
    deadline = time.monotonic() + 10
    while not request_log.log_files(prefix) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(request_log.log_files(prefix)) == 1, "the file was not closed by time"
    logger.submit(predict_entry(2))
    logger.close()
    assert len(request_log.log_files(prefix)) == 2


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    logger = request_log.RequestLogger(config(str(tmp_path / "r")), queue_size=2)
    started = time.perf_counter()
    for index in range(5):  # the writer thread is not started: nothing drains the queue
        logger.submit(predict_entry(index))
    assert time.perf_counter() - started < 1.0
    assert (logger.counts.sampled, logger.counts.dropped) == (5, 3)
    logger.start()
    logger.close()
    assert logger.counts.written == 2


def test_sampling_follows_the_rate(tmp_path):
    assert not any(request_log.RequestLogger(config("/x/r", 0.0)).sample() for _ in range(1000))
    assert all(request_log.RequestLogger(config("/x/r", 1.0)).sample() for _ in range(1000))
    logger = request_log.RequestLogger(config("/x/r", 0.25), seed=3)
    hits = sum(logger.sample() for _ in range(4000))
    assert 850 <= hits <= 1150  # mean 1,000, standard deviation 27


def test_corrupt_and_truncated_files_are_skipped_and_named(tmp_path):
    prefix = str(tmp_path / "requests")
    logger = request_log.RequestLogger(config(prefix), max_records_per_file=2)
    logger.start()
    for index in range(4):
        logger.submit(predict_entry(index))
    logger.close()
    good = request_log.log_files(prefix)
    truncated = f"{prefix}.20991231T000000Z.1.00001.tfrecord"
    with open(good[0], "rb") as source, open(truncated, "wb") as target:
        target.write(source.read()[:-7])
    garbage = f"{prefix}.20991231T000000Z.1.00002.tfrecord"
    with open(garbage, "wb") as target:
        target.write(b"this is not a TFRecord file" * 10)
    result = request_log.read_prediction_logs(prefix)
    assert result.files == 4
    assert sorted(result.corrupt_files) == [truncated, garbage]
    assert len(result.records) == 4


def test_a_multi_inference_call_is_one_record_with_a_result_per_task(tmp_path):
    """TF Serving's MultiInferenceLog: the tasks (signature, method) and the examples in
    the request, one classification or regression result per task in the response."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["image"].bytes_list.value.append(bytes(range(256)) * 3 + bytes(16))
    logs = request_log.RequestLogs({"mnist": config(str(tmp_path / "r"))})
    logs.start()
    classes = np.array([[b"0", b"1"]], dtype=object)
    scores = np.array([[0.25, 0.75]], dtype=np.float32)
    results = [
        (SimpleNamespace(name="classify"), "tensorflow/serving/classify", (classes, scores)),
        (
            SimpleNamespace(name="regress"),
            "tensorflow/serving/regress",
            np.array([0.5], np.float32),
        ),
    ]
    logs.log_multi_inference(SERVABLE, [example.SerializeToString()], results)
    logs.close()
    (record,) = request_log.read_prediction_logs(str(tmp_path / "r")).records
    log = record.multi_inference_log
    assert [(t.model_spec.signature_name, t.method_name) for t in log.request.tasks] == [
        ("classify", "tensorflow/serving/classify"),
        ("regress", "tensorflow/serving/regress"),
    ]
    assert log.request.input.example_list.examples[0] == example
    first, second = log.response.results
    assert first.model_spec.version.value == 7
    assert [(c.label, c.score) for c in first.classification_result.classifications[0].classes] == [
        ("0", 0.25),
        ("1", 0.75),
    ]
    assert [r.value for r in second.regression_result.regressions] == [0.5]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        np.array([[0, 255], [17, 3]], dtype=np.uint8),
        np.array([1, -2, 3], dtype=np.int64),
        np.array([True, False]),
        np.array([b"a", b"\x00b"], dtype=object),
    ],
)
def test_log_tensors_are_compact_and_read_back_exactly(array):
    from serving.tensor_proto import array_to_tensor

    logged = request_log._tensor(array)
    answered = array_to_tensor(array)
    # The log keeps numbers as raw bytes, the response in typed fields (TF Serving's
    # default for Predict); both read back as the same array.
    if array.dtype != object:
        assert logged.tensor_content == np.ascontiguousarray(array).tobytes()
        assert not answered.tensor_content
    else:
        assert list(logged.string_val) == list(array)
    for proto in (logged, answered):
        back = tf.make_ndarray(proto)
        assert back.shape == array.shape and back.dtype == (
            array.dtype if array.dtype != object else back.dtype
        )
        assert back.tolist() == array.tolist()


def test_loggers_are_shared_between_models_with_the_same_config(tmp_path):
    same = config(str(tmp_path / "a"))
    logs = request_log.RequestLogs({"m1": same, "m2": same, "m3": config(str(tmp_path / "b"))})
    assert logs.loggers["m1"] is logs.loggers["m2"] is not logs.loggers["m3"]
    logs.start()
    logs.log_predict(
        SimpleNamespace(model_name="m2", version=1), "s", {"x": np.zeros(1)}, {"y": np.ones(1)}
    )
    logs.log_predict(
        SimpleNamespace(model_name="other", version=1), "s", {"x": np.zeros(1)}, {"y": np.ones(1)}
    )
    logs.close()
    assert len(request_log.read_prediction_logs(str(tmp_path / "a")).records) == 1
    assert request_log.read_prediction_logs(str(tmp_path / "b")).records == []


# --- the server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory):
    """A server of the seed-0 model (version 5) logging every request, then stopped so
    its files are closed; the replies it gave and the log prefix."""
    root = tmp_path_factory.mktemp("logged")
    push(exported_versions()[0], root / MODEL_NAME, 5)
    prefix = root / "logs" / "requests"
    (root / "logging.config").write_text(
        f'log_collector_config {{ filename_prefix: "{prefix}" }} '
        "sampling_config { sampling_rate: 1.0 }"
    )
    server = ServerProcess(
        root, "--model-base-path", str(root / MODEL_NAME),
        "--logging-config", str(root / "logging.config"),
    )  # fmt: skip
    images, labels = mnist_images()
    replies = {}
    try:
        server.wait_serving([5])
        response = requests.post(
            f"{server.url}/v1/models/{MODEL_NAME}:predict",
            json={"signature_name": "predict_pixels_uint8", "instances": images[:3].tolist()},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        replies["rest"] = np.array([p["probabilities"] for p in response.json()["predictions"]])
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.model_spec.signature_name = "predict_pixels_uint8"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images[3:4]))
        with grpc.insecure_channel(server.grpc_target) as channel:
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=30
            )
        replies["grpc"] = tf.make_ndarray(reply.outputs["probabilities"])
        response = requests.post(
            f"{server.url}/v1/models/{MODEL_NAME}:classify",
            json={
                "signature_name": "classify",
                "examples": [
                    {"image": {"b64": base64.b64encode(image.tobytes()).decode()}}
                    for image in images[4:6]
                ],
            },
            timeout=30,
        )
        replies["classify"] = (response.status_code, response.text)
        multi = inference_pb2.MultiInferenceRequest()
        task = multi.tasks.add(method_name="tensorflow/serving/classify")
        task.model_spec.name = MODEL_NAME
        task.model_spec.signature_name = "classify"
        multi.input.example_list.examples.add().CopyFrom(image_to_example(images[6], 0))
        with grpc.insecure_channel(server.grpc_target) as channel:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).MultiInference(
                multi, timeout=30
            )
        assert not list((root / "logs").glob("*.tfrecord")), "a file was closed before the stop"
    finally:
        server.stop()
    return replies, str(prefix), images


def test_the_server_logs_rest_and_grpc_predicts_as_prediction_logs(logged_server):
    replies, prefix, images = logged_server
    result = request_log.read_prediction_logs(prefix)
    assert result.corrupt_files == []
    predicts = [r for r in result.records if r.WhichOneof("log_type") == "predict_log"]
    assert len(predicts) == 2
    rest, grpc_record = predicts
    for record, rows, scores in (
        (rest, images[:3], replies["rest"]),
        (grpc_record, images[3:4], replies["grpc"]),
    ):
        assert record.log_metadata.model_spec.name == MODEL_NAME
        assert record.log_metadata.model_spec.version.value == 5
        assert record.log_metadata.model_spec.signature_name == "predict_pixels_uint8"
        assert abs(record.log_metadata.timestamp_secs - time.time()) < 600
        np.testing.assert_array_equal(
            tf.make_ndarray(record.predict_log.request.inputs["images"]), rows
        )
        logged = tf.make_ndarray(record.predict_log.response.outputs["probabilities"])
        np.testing.assert_allclose(logged, scores, rtol=1e-6)


def test_the_server_logs_classify_calls_with_their_examples_and_classes(logged_server):
    replies, prefix, images = logged_server
    status, text = replies["classify"]
    assert status == 200, text
    records = request_log.read_prediction_logs(prefix).records
    (classify,) = [r for r in records if r.WhichOneof("log_type") == "classify_log"]
    examples = classify.classify_log.request.input.example_list.examples
    assert len(examples) == 2
    pixels = examples[0].features.feature["image"].bytes_list.value[0]
    assert pixels == images[4].tobytes()
    classifications = classify.classify_log.response.result.classifications
    assert len(classifications) == 2 and len(classifications[0].classes) == 10
    assert classify.log_metadata.model_spec.signature_name == "classify"


def test_the_server_logs_a_grpc_multi_inference_call(logged_server):
    _, prefix, images = logged_server
    records = request_log.read_prediction_logs(prefix).records
    (multi,) = [r for r in records if r.WhichOneof("log_type") == "multi_inference_log"]
    log = multi.multi_inference_log
    assert [t.method_name for t in log.request.tasks] == ["tensorflow/serving/classify"]
    image = log.request.input.example_list.examples[0].features.feature["image"]
    assert image.bytes_list.value[0] == images[6].tobytes()
    (result,) = log.response.results
    assert result.model_spec.version.value == 5
    assert len(result.classification_result.classifications[0].classes) == 10


def run_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.server", "--rest-port", "0", "--grpc-port", "0", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_log_directory_that_cannot_be_written_stops_the_server_at_start(tmp_path):
    """Refused, not served without the logs: one line naming the model, the prefix and
    the reason, exit code 2 (a regular file stands where the directory should be, so
    this holds for root too)."""
    (tmp_path / "blocker").write_text("a file, not a directory")
    prefix = tmp_path / "blocker" / "logs" / "requests"
    (tmp_path / "logging.config").write_text(
        f'log_collector_config {{ filename_prefix: "{prefix}" }}'
    )
    done = run_serve(
        "--model-base-path", str(tmp_path / "models"),
        "--logging-config", str(tmp_path / "logging.config"),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: model mnist: cannot write request logs (filename_prefix {prefix})"
    )
    assert "Not a directory; expected a writable directory" in lines[0]


def test_a_models_config_logging_config_is_checked_and_named(tmp_path):
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "mnist" base_path: "/models/mnist" '
        'model_platform: "tensorflow" logging_config { log_collector_config { '
        'filename_prefix: "/tmp/x" } sampling_config { sampling_rate: 2.0 } } } }'
    )
    done = run_serve("--model-config-file", str(tmp_path / "models.config"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: --model-config-file {tmp_path / 'models.config'}: model mnist: logging_config: "
        "sampling_config.sampling_rate is 2.0; expected 0.0 to 1.0 (the fraction of requests "
        "logged)"
    )
