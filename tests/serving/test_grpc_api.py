"""The embedded server's gRPC API with the official ``tensorflow_serving.apis`` stubs:
PredictionService (Predict, Classify, Regress, MultiInference, GetModelMetadata) and
ModelService (GetModelStatus) against a real pushed model, compared with a direct
``tf.saved_model.load`` call; outputs in the typed value fields as TF Serving writes
them; and the status codes of bad calls. TF Serving's own models over gRPC are
``test_tf_serving_models.py``.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

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
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


@pytest.fixture(scope="module")
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def direct():
    return tf.saved_model.load(str(exported_versions()[0]))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return mnist_images()[0][:5]


def predict_request(signature: str, images, version: int | None = None, label: str = ""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


def test_get_model_status(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    response = stub.GetModelStatus(request, timeout=10)
    [status] = response.model_version_status
    assert (status.version, status.state, status.status.error_code) == (
        VERSION,
        get_model_status_pb2.ModelVersionStatus.AVAILABLE,
        0,
    )


def test_get_model_metadata(prediction):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    response = prediction.GetModelMetadata(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL_NAME, VERSION)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    images_input = signature_defs.signature_def["predict_pixels_uint8"].inputs["images"]
    assert images_input.dtype == tf.uint8.as_datatype_enum
    assert images_input.tensor_shape.unknown_rank
    assert signature_defs.signature_def["classify"].method_name == "tensorflow/serving/classify"


@pytest.mark.parametrize(
    ("signature", "dtype", "shape"),
    [
        ("predict_pixels_uint8", np.uint8, (-1, 28, 28)),
        ("predict_pixels", np.float32, (-1, 784)),
    ],
)
def test_predict_equals_direct_call(prediction, direct, images, signature, dtype, shape):
    """Predict through each pixel signature (and each version choice) returns the direct
    call's outputs exactly, and says which version and signature answered."""
    expected = direct.signatures["predict_pixels_uint8"](images=tf.constant(images))
    for version, label in ((None, ""), (VERSION, ""), (None, "stable")):
        request = predict_request(signature, images.reshape(shape).astype(dtype), version, label)
        response = prediction.Predict(request, timeout=30)
        assert response.model_spec.version.value == VERSION
        assert response.model_spec.signature_name == signature
        for key in ("classes", "probabilities", "class_names"):
            np.testing.assert_array_equal(
                tf.make_ndarray(response.outputs[key]), expected[key].numpy()
            )


def test_predict_output_filter_and_examples(prediction, direct, images):
    """serving_default on serialized tf.Examples; output_filter keeps only what is asked."""
    request = predict_pb2.PredictRequest(output_filter=["class_names"])
    request.model_spec.name = MODEL_NAME
    examples = [serialized_example(image) for image in images]
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
    response = prediction.Predict(request, timeout=30)
    assert list(response.outputs) == ["class_names"]
    expected = direct.signatures["serving_default"](examples=tf.constant(examples))
    assert tf.make_ndarray(response.outputs["class_names"]).tolist() == (
        expected["class_names"].numpy().tolist()
    )


def test_classify_gives_label_and_score_per_class(prediction, direct, images):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = "classify"
    for image in images:
        example = request.input.example_list.examples.add()
        example.features.feature["image"].bytes_list.value.append(image.tobytes())
    response = prediction.Classify(request, timeout=30)
    assert response.model_spec.version.value == VERSION
    expected = direct.signatures["predict_pixels_uint8"](images=tf.constant(images))
    classifications = response.result.classifications
    assert [[c.label for c in row.classes] for row in classifications] == [list(CLASS_NAMES)] * len(
        images
    )
    np.testing.assert_array_equal(
        np.array([[c.score for c in row.classes] for row in classifications], np.float32),
        expected["probabilities"].numpy(),
    )


@pytest.mark.parametrize(
    ("request_factory", "code", "message"),
    [
        (
            lambda im: predict_request("predict_pixels", im.astype(np.int32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'images' of signature 'predict_pixels' expects DT_FLOAT, got DT_INT32",
        ),
        (
            lambda im: predict_request("nope", im),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda im: predict_request("predict_pixels_uint8", im, version=7),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(mnist, 7)",
        ),
        (
            lambda im: predict_request("predict_pixels_uint8", im[:, :27, :27]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "images: expected shape [N, 28, 28] or [N, 784], got] [5 27 27]",
        ),
        (
            lambda im: predict_request("predict_pixels_uint8", im, label="canary"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: canary",
        ),
    ],
    ids=["wrong-dtype", "unknown-signature", "unknown-version", "wrong-shape", "unknown-label"],
)
def test_bad_predict_gets_status_code(prediction, images, request_factory, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(request_factory(images), timeout=30)
    assert caught.value.code() == code
    assert message in caught.value.details()
    ok = prediction.Predict(predict_request("predict_pixels_uint8", images), timeout=30)
    assert ok.model_spec.version.value == VERSION


def test_unknown_model_is_not_found(prediction, images):
    request = predict_request("predict_pixels_uint8", images)
    request.model_spec.name = "fashion"
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "Servable not found for request: Latest(fashion)"


def test_outputs_are_in_typed_value_fields(prediction, images):
    """As TF Serving writes Predict outputs by default (Tensor::AsProtoField): float_val,
    int64_val, string_val, and no tensor_content."""
    response = prediction.Predict(predict_request("predict_pixels_uint8", images), timeout=30)
    fields = {
        key: (tensor.dtype, tensor.tensor_content, [d.size for d in tensor.tensor_shape.dim])
        for key, tensor in response.outputs.items()
    }
    assert fields == {
        "classes": (types_pb2.DT_INT64, b"", [len(images)]),
        "probabilities": (types_pb2.DT_FLOAT, b"", [len(images), 10]),
        "class_names": (types_pb2.DT_STRING, b"", [len(images)]),
    }
    assert len(response.outputs["probabilities"].float_val) == len(images) * 10
    assert len(response.outputs["classes"].int64_val) == len(images)
    assert list(response.outputs["class_names"].string_val) == [
        CLASS_NAMES[c].encode() for c in response.outputs["classes"].int64_val
    ]


def test_output_filter_names_an_unknown_output(prediction, images):
    request = predict_request("predict_pixels_uint8", images)
    request.output_filter.append("logits")
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "output tensor alias not found in signature: logits Outputs expected to be in the "
        "set {class_names,classes,probabilities}."
    )


def test_multi_inference_classify_task_equals_classify(prediction, images):
    """MultiInference with one classify task on the classify signature: Classify's answer,
    the ModelSpec echoed per task."""
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add(method_name="tensorflow/serving/classify")
    task.model_spec.name = MODEL_NAME
    task.model_spec.signature_name = "classify"
    for image in images[:2]:
        example = request.input.example_list.examples.add()
        example.features.feature["image"].bytes_list.value.append(image.tobytes())
    response = prediction.MultiInference(request, timeout=30)
    [result] = response.results
    assert (result.model_spec.name, result.model_spec.signature_name) == (MODEL_NAME, "classify")
    assert result.model_spec.version.value == VERSION
    classify = classification_pb2.ClassificationRequest(input=request.input)
    classify.model_spec.name = MODEL_NAME
    classify.model_spec.signature_name = "classify"
    assert result.classification_result == prediction.Classify(classify, timeout=30).result


def test_regress_on_a_model_without_regression_signature(prediction, images):
    """The MNIST model has no regression signature: serving_default (predict, input
    'examples') is refused with TF Serving's method-name error."""
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL_NAME
    example = request.input.example_list.examples.add()
    example.features.feature["image"].bytes_list.value.append(images[0].tobytes())
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Regress(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict"
    )
