"""The embedded server on the models TF Serving's own tests serve, built in this test
session by ``tests/tf_serving_models.py``: what TF Serving's documentation and
``tensorflow_model_server_test.py`` say it answers for them, over REST and gRPC.

One server runs four models from a models.config:

- ``half_plus_two``: the TF1 SavedModelBuilder graph, version directory ``00000123``
  (TF Serving serves it as version 123), no warm-up file;
- ``half_plus_two_tf2``: the same model saved by ``tf.saved_model.save``;
- ``mnist_example``: softmax MNIST exported as TF Serving's MNIST example exports it;
- ``lifecycle``: a base path with two directories naming version 123 (``00000123``
  and ``123``) and odd children (names that are no number, a file, a symlink loop),
  which the tests then change while the server runs: a broken version (retried with
  short settings, then END while the old version serves), a version that only
  becomes loadable between two retries.
"""

from __future__ import annotations

import os
import shutil
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.signatures import ServableModel
from tests import tf_serving_models as models
from tests.serving_fixture import ServerProcess

PREDICT, CLASSIFY, REGRESS = models.PREDICT, models.CLASSIFY, models.REGRESS
MNIST_VERSION = 1
RETRIES, RETRY_INTERVAL_S = 2, 0.5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tf-serving-models")


@pytest.fixture(scope="module")
def lifecycle(root):
    """Version 123 twice (TF2 as 00000123, TF1 as 123) and odd children, from the start."""
    base = models.base_path(root, "half_plus_two_tf2", "00000123", name="lifecycle")
    models.copy_version("half_plus_two", base, "123")
    (base / "²").mkdir()
    (base / ".incoming-x").mkdir()
    (base / "abc").mkdir()
    (base / "7").write_text("a file, not a version directory")
    os.symlink("130", base / "130")  # a symlink loop: stat() fails with ELOOP
    return base


@pytest.fixture(scope="module")
def server(root, lifecycle):
    bases = {
        "half_plus_two": models.base_path(root, "half_plus_two"),
        "half_plus_two_tf2": models.base_path(root, "half_plus_two_tf2"),
        "mnist_example": models.base_path(root, "mnist_example", str(MNIST_VERSION)),
        "lifecycle": lifecycle,
    }
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
            for name, base in bases.items()
        )
        + "}\n"
    )
    process = ServerProcess(
        root,
        "--model-config-file", str(config),
        "--max-num-load-retries", str(RETRIES),
        "--load-retry-interval-seconds", str(RETRY_INTERVAL_S),
    )  # fmt: skip
    try:
        for name in bases:
            process.wait_serving([MNIST_VERSION if name == "mnist_example" else 123], name)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


@pytest.fixture(scope="module")
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def rest(server: ServerProcess, path: str, body=None) -> requests.Response:
    url = f"{server.url}/v1/models/{path}"
    if body is None:
        return requests.get(url, timeout=30)
    return requests.post(url, json=body, timeout=30)


def add_example(examples, **features: list[float]) -> None:
    examples.add().CopyFrom(models.example(**features))


def assert_spec(spec, name: str, signature: str, version: int = models.VERSION) -> None:
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature, version)


# --- half_plus_two (TF1), REST ----------------------------------------------------------


def test_rest_predict_row_and_columnar(server):
    """TF Serving's testPredictREST and testPredictColumnarREST: y = 0.5 x + 2 for x fed as
    [3] into the [-1, 1] input x:0."""
    row = rest(server, "half_plus_two:predict", {"instances": [2.0, 3.0, 4.0]})
    assert (row.status_code, row.json()) == (200, {"predictions": [3.0, 3.5, 4.0]})
    columnar = rest(server, "half_plus_two:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert (columnar.status_code, columnar.json()) == (200, {"outputs": [3.0, 3.5, 4.0]})
    versioned = rest(server, "half_plus_two/versions/123:predict", {"instances": [[2.0]]})
    assert versioned.json() == {"predictions": [[3.0]]}
    assert versioned.headers["X-Model-Version"] == "123"


def test_rest_classify_and_regress(server):
    """testClassifyREST and testRegressREST, and the other regression signature (y2 = 0.5 x + 3)."""
    body = {"examples": [{"x": 2.0}]}
    classify = rest(server, "half_plus_two:classify", {"signature_name": "classify_x_to_y", **body})
    assert (classify.status_code, classify.json()) == (200, {"results": [[["", 3.0]]]})
    regress = rest(server, "half_plus_two:regress", {"signature_name": "regress_x_to_y", **body})
    assert (regress.status_code, regress.json()) == (200, {"results": [3.0]})
    regress2 = rest(
        server,
        "half_plus_two:regress",
        {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}, {"x": 4.0}]},
    )
    assert regress2.json() == {"results": [4.0, 5.0]}
    context = rest(
        server,
        "half_plus_two:regress",
        {"signature_name": "regress_x_to_y", "context": {"x": 6.0}, "examples": [{}, {"x": 2.0}]},
    )
    assert context.json() == {"results": [5.0, 3.0]}


def test_rest_classify_and_regress_refuse_other_signatures(server):
    """Method name and output keys as TF Serving checks them: serving_default (predict, input
    x) cannot classify; classify_x_to_y has no 'outputs' to regress."""
    classify = rest(server, "half_plus_two:classify", {"examples": [{"x": 2.0}]})
    assert classify.status_code == 400
    assert classify.json()["error"] == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    regress = rest(
        server,
        "half_plus_two:regress",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
    )
    assert regress.status_code == 400
    assert regress.json()["error"] == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/classify"
    )
    missing = rest(server, "half_plus_two:regress", {"signature_name": "nope", "examples": [{}]})
    assert missing.json() == {"error": "No signature was found with the name: nope"}


def test_rest_status_of_version_dir_00000123(server):
    """testGetStatusREST: the directory 00000123 is version "123", AVAILABLE, error_code "OK"."""
    expected = {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    for path in ("half_plus_two", "half_plus_two/versions/123"):
        response = rest(server, path)
        assert (response.status_code, response.json()) == (200, expected)


def _tensor(name: str, dtype: str, dims: list[int] | None = None) -> dict:
    if dims is None:
        shape = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature_json(inputs: dict, outputs: dict, method: str) -> dict:
    return {"inputs": inputs, "outputs": outputs, "method_name": method, "defaults": {}}


def tf_serving_half_plus_two_metadata(model_name: str) -> dict:
    """The REST metadata TF Serving answers for half_plus_two (as its test data states it):
    five signatures on tensors x:0, x2:0, y:0, y2:0, y3:0 ([-1, 1] floats) and
    tf_example:0 (strings of unknown rank), and a ModelSpec without signature name."""
    examples = {"inputs": _tensor("tf_example:0", "DT_STRING")}
    floats = {
        name: _tensor(f"{name}:0", "DT_FLOAT", [-1, 1]) for name in ("x", "x2", "y", "y2", "y3")
    }
    return {
        "model_spec": {"name": model_name, "signature_name": "", "version": "123"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": _signature_json(
                        {"x": floats["x"]}, {"y": floats["y"]}, PREDICT
                    ),
                    "classify_x_to_y": _signature_json(examples, {"scores": floats["y"]}, CLASSIFY),
                    "regress_x_to_y": _signature_json(examples, {"outputs": floats["y"]}, REGRESS),
                    "regress_x_to_y2": _signature_json(
                        examples, {"outputs": floats["y2"]}, REGRESS
                    ),
                    "regress_x2_to_y3": _signature_json(
                        {"inputs": floats["x2"]}, {"outputs": floats["y3"]}, REGRESS
                    ),
                }
            }
        },
    }


def test_rest_metadata_is_tf_servings(server):
    """testGetModelMetadataREST: the same JSON as TF Serving's, field by field."""
    response = rest(server, "half_plus_two/metadata")
    assert response.status_code == 200
    got, expected = response.json(), tf_serving_half_plus_two_metadata("half_plus_two")
    assert got["model_spec"] == expected["model_spec"]
    got_signatures = got["metadata"]["signature_def"]["signature_def"]
    expected_signatures = expected["metadata"]["signature_def"]["signature_def"]
    assert sorted(got_signatures) == sorted(expected_signatures)
    for name, signature in expected_signatures.items():
        for field, value in signature.items():
            assert got_signatures[name][field] == value, (name, field)
    assert got == expected


# --- half_plus_two (TF1), gRPC -----------------------------------------------------------


def predict_x(signature: str = "serving_default", output_filter=("y",), dims=(1,)):
    """TF Serving's VerifyPredictRequest: x = [2.0] as float_val."""
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = signature
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    for size in dims:
        request.inputs["x"].tensor_shape.dim.add(size=size)
    return request


@pytest.mark.parametrize(
    ("signature", "output_filter", "dims"),
    [("serving_default", ("y",), (1,)), ("serving_default", (), (1,)), ("", (), (1, 1))],
    ids=["output-filter", "all-outputs", "default-signature"],
)
def test_grpc_predict(prediction, signature, output_filter, dims):
    """testPredictSavedModel: y as one float_val 3.0, the ModelSpec echoed with the signature
    used (serving_default also when the request left it empty)."""
    response = prediction.Predict(predict_x(signature, output_filter, dims), timeout=30)
    assert list(response.outputs) == ["y"]
    y = response.outputs["y"]
    assert (y.dtype, list(y.float_val), y.tensor_content) == (types_pb2.DT_FLOAT, [3.0], b"")
    assert [d.size for d in y.tensor_shape.dim] == list(dims)
    assert_spec(response.model_spec, "half_plus_two", "serving_default")


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            predict_x(output_filter=("z",)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias not found in signature: z Outputs expected to be in the set {y}.",
        ),
        (
            predict_x(output_filter=("y", "y")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate output tensor alias: y",
        ),
        (
            predict_x(signature="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
    ],
    ids=["unknown-output", "duplicate-output", "unknown-signature"],
)
def test_grpc_predict_errors(prediction, request_, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(request_, timeout=30)
    assert caught.value.code() == code
    assert caught.value.details().startswith(message)


def test_grpc_classify_and_regress(prediction):
    """testClassify and testRegress: 3.0 for x = 2, the ModelSpec echoed; with a context, the
    example's own features win."""
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus_two"
    classify.model_spec.signature_name = "classify_x_to_y"
    add_example(classify.input.example_list.examples, x=[2.0])
    response = prediction.Classify(classify, timeout=30)
    assert [
        [(c.label, c.score) for c in row.classes] for row in response.result.classifications
    ] == [[("", 3.0)]]
    assert_spec(response.model_spec, "half_plus_two", "classify_x_to_y")

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two"
    regress.model_spec.signature_name = "regress_x_to_y2"
    regress.model_spec.version.value = models.VERSION
    with_context = regress.input.example_list_with_context
    with_context.context.CopyFrom(models.example(x=[6.0]))
    add_example(with_context.examples, x=[2.0])
    with_context.examples.add()
    response = prediction.Regress(regress, timeout=30)
    assert [r.value for r in response.result.regressions] == [4.0, 6.0]
    assert_spec(response.model_spec, "half_plus_two", "regress_x_to_y2")


def test_grpc_classify_errors(prediction):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Classify(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    request.model_spec.signature_name = "classify_x_to_y"
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Classify(request, timeout=30)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Input is empty.",
    )


def multi_inference_request(model: str, tasks: list[tuple[str, str]]):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    add_example(request.input.example_list.examples, x=[2.0])
    return request


@pytest.mark.parametrize("model", ["half_plus_two", "half_plus_two_tf2"])
def test_grpc_multi_inference(prediction, model):
    """testMultiInference (TF1 and TF2): a regression and a classification of one example."""
    request = multi_inference_request(
        model, [("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)]
    )
    response = prediction.MultiInference(request, timeout=30)
    assert len(response.results) == 2
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert_spec(response.results[0].model_spec, model, "regress_x_to_y")
    assert_spec(response.results[1].model_spec, model, "classify_x_to_y")


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        (
            [("regress_x_to_y", REGRESS), ("regress_x_to_y", CLASSIFY)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            [("nope", REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope",
        ),
        (
            [("regress_x_to_y", PREDICT)],
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
    ],
    ids=["duplicate", "unknown-signature", "predict-task"],
)
def test_grpc_multi_inference_errors(prediction, tasks, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        prediction.MultiInference(multi_inference_request("half_plus_two", tasks), timeout=30)
    assert (caught.value.code(), caught.value.details()) == (code, message)
    request = multi_inference_request("half_plus_two", [("regress_x_to_y", REGRESS)])
    request.tasks.add(method_name=CLASSIFY).model_spec.name = "half_plus_two_tf2"
    with pytest.raises(grpc.RpcError) as caught:
        prediction.MultiInference(request, timeout=30)
    assert caught.value.details() == (
        "All ModelSpecs in a MultiInferenceRequest must access the same model name."
    )


def test_grpc_metadata_and_status(prediction, channel):
    """testGetModelMetadata and testGetModelStatus."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    response = prediction.GetModelMetadata(request, timeout=30)
    assert_spec(response.model_spec, "half_plus_two", "")
    assert list(response.metadata) == ["signature_def"]
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    expected = tf_serving_half_plus_two_metadata("half_plus_two")["metadata"]["signature_def"]
    assert {n: s.method_name for n, s in signature_defs.signature_def.items()} == {
        n: s["method_name"] for n, s in expected["signature_def"].items()
    }
    assert signature_defs.signature_def["regress_x2_to_y3"].inputs["inputs"].name == "x2:0"

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "half_plus_two"
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    [version] = stub.GetModelStatus(status, timeout=30).model_version_status
    assert (version.version, version.state, version.status.error_code) == (
        123,
        get_model_status_pb2.ModelVersionStatus.AVAILABLE,
        0,
    )


def test_reload_config_is_unimplemented(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "restart it with the new configuration" in caught.value.details()


# --- half_plus_two (TF2) -----------------------------------------------------------------


def test_tf2_model_over_rest_and_grpc(server, prediction):
    """testClassifyTf2 and testRegressTf2: tf.saved_model.save writes the predict method name
    for every signature, and TF Serving (method name check off, its default) classifies and
    regresses with them all the same, as their keys fit."""
    row = rest(server, "half_plus_two_tf2:predict", {"instances": [2.0, 3.0, 4.0]})
    assert row.json() == {"predictions": [3.0, 3.5, 4.0]}
    for method, signature in (("classify", "classify_x_to_y"), ("regress", "regress_x_to_y")):
        body = {"signature_name": signature, "examples": [{"x": 2.0}]}
        expected = [["", 3.0]] if method == "classify" else 3.0
        response = rest(server, f"half_plus_two_tf2:{method}", body)
        assert response.json() == {"results": [expected]}
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two_tf2"
    regress.model_spec.signature_name = "regress_x_to_y"
    add_example(regress.input.example_list.examples, x=[2.0])
    response = prediction.Regress(regress, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0]
    assert_spec(response.model_spec, "half_plus_two_tf2", "regress_x_to_y")
    metadata = rest(server, "half_plus_two_tf2/metadata").json()
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert {name: s["method_name"] for name, s in signatures.items()} == {
        "__saved_model_init_op": "",
        "serving_default": PREDICT,
        "classify_x_to_y": PREDICT,
        "regress_x_to_y": PREDICT,
        "regress_x_to_y2": PREDICT,
        "regress_x2_to_y3": PREDICT,
    }


# --- TF Serving's MNIST example ----------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_eval():
    return models.mnist_fixture("t10k")


def test_mnist_example_predict_images(server, prediction, mnist_eval):
    """predict_images on all 200 fixture test images in one gRPC call: the direct call's scores,
    as float_val, and mostly right after a few training steps."""
    pixels, labels = mnist_eval
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist_example"
    request.model_spec.signature_name = "predict_images"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(pixels))
    response = prediction.Predict(request, timeout=60)
    assert_spec(response.model_spec, "mnist_example", "predict_images", MNIST_VERSION)
    scores = response.outputs["scores"]
    assert len(scores.float_val) == len(pixels) * 10
    got = tf.make_ndarray(scores)
    direct = tf.saved_model.load(str(models.built("mnist_example")))
    expected = direct.signatures["predict_images"](images=tf.constant(pixels))["scores"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert (got.argmax(axis=1) == labels).mean() > 0.7

    row = rest(
        server,
        "mnist_example:predict",
        {"signature_name": "predict_images", "instances": pixels[:3].tolist()},
    )
    assert np.array(row.json()["predictions"]).argmax(axis=1).tolist() == (
        expected[:3].argmax(axis=1).tolist()
    )


def test_mnist_example_classify(server, prediction, mnist_eval):
    """The classify serving_default on tf.Examples with feature x: the ten digits as labels,
    best first, scores summing to 1; the ModelSpec names serving_default though the request
    named no signature."""
    pixels, _ = mnist_eval
    direct = tf.saved_model.load(str(models.built("mnist_example")))
    expected = direct.signatures["predict_images"](images=tf.constant(pixels[:4]))["scores"]
    best = expected.numpy().argmax(axis=1)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "mnist_example"
    for image in pixels[:4]:
        add_example(request.input.example_list.examples, x=image.tolist())
    response = prediction.Classify(request, timeout=30)
    assert_spec(response.model_spec, "mnist_example", "serving_default", MNIST_VERSION)
    for row, top in zip(response.result.classifications, best, strict=True):
        labels = [c.label for c in row.classes]
        assert sorted(labels) == [str(d) for d in range(10)]
        assert labels[0] == str(top)
        assert sum(c.score for c in row.classes) == pytest.approx(1.0, abs=1e-5)
    body = {"examples": [{"x": image.tolist()} for image in pixels[:4]]}
    results = rest(server, "mnist_example:classify", body).json()["results"]
    assert [result[0][0] for result in results] == [str(top) for top in best]


# --- In process: TF1 assets and init ops --------------------------------------------------


def test_tf1_assets_and_table_initializers_are_honoured(tmp_path):
    """A TF1 table filled from an asset file by a legacy init op, served from a copy of the
    version (the file it was built from is gone): the words come from the copied asset."""
    path = tmp_path / "1"
    shutil.copytree(models.built("asset_vocabulary"), path)
    servable = ServableModel("vocabulary", 1, str(path))
    signature = servable.signature("")
    outputs = servable.run(signature, {"ids": np.array([0, 3, 9], np.int64)})
    assert outputs["words"].tolist() == [b"zero", b"three", b"?"]


# --- The lifecycle base path ---------------------------------------------------------------


def _status(server: ServerProcess, model: str = "lifecycle") -> dict[int, tuple[str, str]]:
    body = rest(server, model).json()
    return {
        int(s["version"]): (s["state"], s["status"]["error_message"])
        for s in body.get("model_version_status", [])
    }


def _served_version(server: ServerProcess) -> int:
    response = rest(server, "lifecycle:predict", {"instances": [2.0]})
    assert response.json() == {"predictions": [3.0]}
    return int(response.headers["X-Model-Version"])


def test_odd_children_are_skipped_and_logged_once(server):
    """², .incoming-x, abc, a file named 7 and a symlink loop named 130 are no versions, each
    logged once however often the watcher polls; it goes on polling (the next tests push
    new versions)."""
    assert _status(server) == {123: ("AVAILABLE", "")}
    log = server.log_path.read_text(errors="replace")
    for name in ("²", ".incoming-x", "abc"):
        assert log.count(f"/{name}: not a version number") == 1, name
    assert log.count("/7: not a directory") == 1
    assert log.count("/130: [Errno 40] Too many levels of symbolic links") == 1


def test_duplicate_version_directories_load_the_last_name(server):
    """00000123 and 123 are both version 123: TF Serving loads the last name in byte order,
    123 (the TF1 model; 00000123 holds the TF2 one, which has an init-op signature)."""
    assert _served_version(server) == 123
    signatures = rest(server, "lifecycle/metadata").json()["metadata"]["signature_def"]
    assert "__saved_model_init_op" not in signatures["signature_def"]
    log = server.log_path.read_text(errors="replace")
    assert log.count("Version 123 will be loaded from 123, 00000123 will be ignored.") == 1


def test_broken_version_is_retried_then_ended_while_old_serves(server, lifecycle):
    """A version that cannot load is tried 1 + RETRIES times, RETRY_INTERVAL_S apart, reported
    LOADING meanwhile and END with the error after; version 123 answers throughout."""
    broken = lifecycle / ".incoming-400"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    os.rename(broken, lifecycle / "400")
    seen_states = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = _status(server).get(400, (None, ""))
        seen_states.append(state[0])
        assert _served_version(server) == 123
        if state[0] == "END":
            break
        time.sleep(0.1)
    assert seen_states[-1] == "END"
    assert "LOADING" in seen_states
    assert _status(server)[400][1].startswith("failed to load: ")
    log = server.log()
    for attempt in range(1, RETRIES + 1):
        assert f"lifecycle version 400 failed to load (retry {attempt} of {RETRIES}" in log
    assert f"lifecycle version 400 failed to load, {RETRIES} retries exhausted" in log
    assert server.serving_versions("lifecycle") == [123]


def test_version_loadable_between_retries_is_served(server, lifecycle):
    """A version whose SavedModel arrives after its first failed load (e.g. copied in place
    without the hidden-name rename) is served on a retry; then the old version ends."""
    late = lifecycle / "500"
    late.mkdir()
    (late / "saved_model.pb").write_bytes(b"")
    server.wait_until(
        lambda: "lifecycle version 500 failed to load (retry 1" in server.log(),
        what="failing version 500 once",
    )
    source = models.built("half_plus_two")
    for child in source.iterdir():
        if child.is_dir():
            shutil.copytree(child, late / child.name)
    shutil.copy(source / "saved_model.pb", late / "saved_model.pb.tmp")
    os.replace(late / "saved_model.pb.tmp", late / "saved_model.pb")
    server.wait_serving([500], "lifecycle")
    assert _served_version(server) == 500
    statuses = _status(server)
    assert statuses[500] == ("AVAILABLE", "")
    assert statuses[123] == ("END", "")
    assert statuses[400][0] == "END"
