"""The server warms a version up as TF Serving does: by replaying the version's own
``assets.extra/tf_serving_warmup_requests`` (predict, classify, regress and
multi-inference logs, at most 1000 records, any failure fails the load), and only
that: a version without the file loads without warm-up."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from serving.signatures import (
    WARMUP_FILE,
    ServableModel,
    clean_op_error,
    replay_warmup_file,
    warm_up,
)
from serving.versions import load_and_warm_up
from tests import tf_serving_models as models
from tests.serving_fixture import MODEL_NAME, exported_versions


def write_warmup_file(version_dir, logs) -> None:
    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def half_plus_two_copy(tmp_path):
    path = tmp_path / "123"
    shutil.copytree(models.built("half_plus_two"), path)
    return path


def predict_log(signature: str = "serving_default", x: float = 2.0):
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[x]], tf.float32))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def classify_log(signature: str):
    request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(signature_name=signature)
    )
    request.input.example_list.examples.add().CopyFrom(models.example(x=[2.0]))
    return prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=request)
    )


def test_the_exported_warmup_requests_are_replayed():
    """Our export writes the file (trainer.export.write_warmup_requests): all of it replays."""
    servable = ServableModel(MODEL_NAME, 1, str(exported_versions()[0]))
    records = sum(1 for _ in tf.data.TFRecordDataset(str(exported_versions()[0] / WARMUP_FILE)))
    assert records > 0
    assert replay_warmup_file(servable) == records


def test_a_failing_warmup_record_fails_the_load(tmp_path):
    path = tmp_path / "version"
    shutil.copytree(exported_versions()[0], path)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name="nope"))
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"x"], tf.string))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    (path / WARMUP_FILE).unlink()
    write_warmup_file(path, [log])
    servable = ServableModel(MODEL_NAME, 2, str(path))
    with pytest.raises(
        ValueError,
        match=r'tf_serving_warmup_requests: warm-up record 0 failed: Serving signature key "nope"',
    ):
        warm_up(servable)


@pytest.mark.parametrize("kind", ["mnist", "half_plus_two"])
def test_a_version_without_the_file_loads_without_warm_up(tmp_path, kind, monkeypatch):
    """As in TF Serving: warm-up is optional, and no request is invented for a version
    without the file (our export's, or TF Serving's half_plus_two which never had one)."""
    if kind == "mnist":
        path = tmp_path / "3"
        shutil.copytree(exported_versions()[0], path)
        (path / WARMUP_FILE).unlink()
    else:
        path = half_plus_two_copy(tmp_path)
    calls = []
    monkeypatch.setattr(ServableModel, "run", lambda self, *args: calls.append(args))
    servable = load_and_warm_up(kind, 3, str(path))
    assert replay_warmup_file(servable) == 0
    assert calls == []


def test_every_log_type_is_replayed(tmp_path):
    """Predict, classify, regress and multi-inference logs run through the APIs' own rules;
    a record without a log is passed over, as TF Serving does."""
    path = half_plus_two_copy(tmp_path)
    regress = regression_pb2.RegressionRequest(
        model_spec=model_pb2.ModelSpec(signature_name="regress_x_to_y2")
    )
    regress.input.example_list.examples.add().CopyFrom(models.example(x=[2.0]))
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("regress_x_to_y", models.REGRESS),
        ("classify_x_to_y", models.CLASSIFY),
    ):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
    multi.input.example_list.examples.add().CopyFrom(models.example(x=[2.0]))
    write_warmup_file(
        path,
        [
            predict_log(),
            classify_log("classify_x_to_y"),
            prediction_log_pb2.PredictionLog(
                regress_log=prediction_log_pb2.RegressLog(request=regress)
            ),
            prediction_log_pb2.PredictionLog(
                multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)
            ),
            prediction_log_pb2.PredictionLog(),
        ],
    )
    assert replay_warmup_file(ServableModel("half_plus_two", 123, str(path))) == 5


@pytest.mark.parametrize(
    ("log", "error"),
    [
        (
            classify_log("serving_default"),
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict",
        ),
        (
            prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog()),
            "Unsupported log_type for warmup: session_run_log",
        ),
    ],
    ids=["classify-on-predict-signature", "session-run-log"],
)
def test_a_record_tf_serving_refuses_fails_the_load(tmp_path, log, error):
    path = half_plus_two_copy(tmp_path)
    write_warmup_file(path, [predict_log(), log])
    with pytest.raises(ValueError, match=f"warm-up record 1 failed: {error}"):
        load_and_warm_up("half_plus_two", 123, str(path))


def test_at_most_1000_records(tmp_path):
    """1000 records warm up; a 1001st fails the load, as TF Serving's kMaxNumRecords."""
    path = half_plus_two_copy(tmp_path)
    write_warmup_file(path, [predict_log(x=float(i)) for i in range(1000)])
    servable = ServableModel("half_plus_two", 123, str(path))
    assert replay_warmup_file(servable) == 1000
    write_warmup_file(path, [predict_log(x=float(i)) for i in range(1001)])
    with pytest.raises(ValueError, match=r"Number of warmup records exceeds the maximum \(1000\)"):
        replay_warmup_file(servable)


@pytest.mark.parametrize(
    "raw",
    [
        # a session call (how every SavedModel runs): the node annotation on the same line
        "assertion failed: [2 of 3 examples malformed] "
        "[[{{function_node __inference_serve_examples_940}}{{node Assert/Assert}}]]",
        "assertion failed: [2 of 3 examples malformed]\n\t [[{{node Assert/Assert}}]]",
        "assertion failed: [2 of 3 examples malformed] \n\t "
        "[[{{function_node __inference_serve_examples_940}}{{node Assert/Assert}}]]",
        # an eager op
        "Graph execution error:\n\nassertion failed: [2 of 3 examples malformed] [Op:Assert]",
    ],
)
def test_op_errors_lose_their_graph_annotations(raw):
    """What a client reads of a TensorFlow op error: the message, no node or op names."""
    assert clean_op_error(raw) == "assertion failed: [2 of 3 examples malformed]"
