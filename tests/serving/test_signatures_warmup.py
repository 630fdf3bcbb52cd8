"""The server replays a version's TF Serving warm-up file before serving it."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from serving.signatures import WARMUP_FILE, ServableModel, replay_warmup_file, warm_up
from tests.serving_fixture import MODEL_NAME, exported_versions


def test_the_exported_warmup_requests_are_replayed():
    servable = ServableModel(MODEL_NAME, 1, str(exported_versions()[0]))
    assert replay_warmup_file(servable) == 16


def test_a_failing_warmup_record_fails_the_load(tmp_path):
    path = tmp_path / "version"
    shutil.copytree(exported_versions()[0], path)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name="nope"))
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"x"], tf.string))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(path / WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    servable = ServableModel(MODEL_NAME, 2, str(path))
    with pytest.raises(ValueError, match=r"tf_serving_warmup_requests: warm-up record 0 failed"):
        warm_up(servable)


def test_a_version_without_the_file_still_warms_up(tmp_path):
    path = tmp_path / "version"
    shutil.copytree(exported_versions()[0], path)
    (path / WARMUP_FILE).unlink()
    servable = ServableModel(MODEL_NAME, 3, str(path))
    assert replay_warmup_file(servable) == 0
    warm_up(servable)
