"""TF Serving's gRPC API on ``grpc.aio`` with the official ``tensorflow_serving.apis``
protos: ``PredictionService`` (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and ``ModelService`` (GetModelStatus; HandleReloadConfigRequest
answers UNIMPLEMENTED). Every response echoes the ModelSpec as TF Serving does: the
model, the version that answered and the signature used (``serving_default`` when
the request left it empty). Output tensors carry their values in the dtype's typed
field (``float_val``, ``string_val``...), as TF Serving writes them by default.
Errors abort the call with the status code TF Serving uses. The operations
themselves are ``service.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.errors import INTERNAL_ERROR_MESSAGE, ServingError, invalid_argument
from serving.metrics import ServingMetrics
from serving.service import InferenceService, set_model_spec
from serving.signatures import (
    CLASSIFY_METHOD,
    fill_classifications,
    input_examples,
    multi_inference_model,
    output_aliases,
    prediction_signature,
)
from serving.tensor_proto import VALUE_FIELDS, fill_tensor

logger = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"


def _version_choice(spec: model_pb2.ModelSpec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def tensor_to_array(key: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto as numpy (strings as an object array of bytes); INVALID_ARGUMENT
    "tensor parsing error: KEY: ..." (TF Serving's words) when malformed.

    The shape must be a valid tensor shape and the proto must carry exactly its number
    of elements, checked before anything is allocated: packed ``tensor_content`` of
    the wrong size is refused by TensorFlow too, while for the typed value fields
    TensorFlow (and ``tf.make_ndarray``) would fill the shape with copies of the last
    value, or zeros, so a few bytes could ask for terabytes."""
    sizes = [dim.size for dim in proto.tensor_shape.dim]
    content = proto.tensor_content
    problem = _tensor_proto_problem(proto, sizes, content)
    if problem is not None:
        raise invalid_argument(f"tensor parsing error: {key}: {problem}")
    try:
        if content and proto.dtype in _NUMPY_DTYPES:
            # tf.make_ndarray takes ~10x longer for the common packed-bytes case.
            return np.frombuffer(content, _NUMPY_DTYPES[proto.dtype]).reshape(sizes)
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"tensor parsing error: {key}: {error}") from None


# Dimensions numpy arrays may have (TensorFlow allows 254).
_MAX_RANK = 32


def _tensor_proto_problem(
    proto: tensor_pb2.TensorProto, sizes: list[int], content: bytes
) -> str | None:
    """What makes the proto unusable as a tensor, or None; only counts, no allocation.
    ``sizes`` and ``content`` are the proto's dimensions and ``tensor_content``."""
    if proto.tensor_shape.unknown_rank:
        return "tensor_shape has unknown rank"
    if len(sizes) > _MAX_RANK:
        return f"tensor_shape has {len(sizes)} dimensions, at most {_MAX_RANK} are supported"
    if any(size < 0 for size in sizes):
        return f"tensor_shape {sizes} has a negative dimension"
    elements = math.prod(sizes)
    field = VALUE_FIELDS.get(proto.dtype)
    if field is None:
        return f"dtype {_dtype_label(proto.dtype)} is not supported"
    if content:
        if proto.dtype == types_pb2.DT_STRING:
            return "a DT_STRING tensor's values must be in string_val, not tensor_content"
        itemsize = _ITEMSIZES[proto.dtype]
        if len(content) != elements * itemsize:
            return (
                f"tensor_content holds {len(content)} bytes, tensor_shape "
                f"{sizes} of {_dtype_label(proto.dtype)} needs {elements * itemsize}"
            )
        return None
    name, per_element = field
    count = len(getattr(proto, name))
    if count != elements * per_element:
        return f"tensor_shape {sizes} has {elements} elements, {name} carries {count} values" + (
            " (two per element)" if per_element == 2 else ""
        )
    return None


def _dtype_label(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)


_NUMPY_DTYPES = {
    tf.dtypes.as_dtype(dtype).as_datatype_enum: np.dtype(dtype)
    for dtype in (np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8, np.int16)
}
# Bytes per element of every dtype that may come as tensor_content.
_ITEMSIZES = {
    dtype: np.dtype(tf.dtypes.as_dtype(dtype).as_numpy_dtype).itemsize
    for dtype in VALUE_FIELDS
    if dtype != types_pb2.DT_STRING
}


class _Calls:
    """Runs one RPC: errors to gRPC status codes, metrics recorded."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics

    async def run(
        self,
        method: str,
        model: str,
        context: grpc.aio.ServicerContext,
        work: Callable[[], Awaitable[Any]],
    ) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await work()
        except ServingError as error:
            code = error.code
            await context.abort(error.code, error.message)
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            # The traceback goes to the log; the client gets no exception text.
            logger.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE)
        finally:
            self.metrics.record("grpc", method, model, code.name, time.perf_counter() - started)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: InferenceService, metrics: ServingMetrics) -> None:
        self.service = service
        self.calls = _Calls(metrics)

    async def Predict(  # noqa: N802 - the proto's method name
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        async def work() -> predict_pb2.PredictResponse:
            version, label = _version_choice(request.model_spec)
            servable = self.service.servable(request.model_spec.name, version, label)
            signature = prediction_signature(servable, request.model_spec.signature_name)
            wanted = output_aliases(signature, request.output_filter)
            # Keys, then lookups: the map's items() view iterates in Python.
            tensors = request.inputs
            inputs = {key: tensor_to_array(key, tensors[key]) for key in tensors}
            _, outputs = await self.service.predict(servable, signature.name, inputs)
            response = predict_pb2.PredictResponse()
            set_model_spec(response.model_spec, servable, signature.name)
            for key in wanted:
                fill_tensor(response.outputs[key], outputs[key])
            return response

        return await self.calls.run("predict", request.model_spec.name, context, work)

    async def Classify(  # noqa: N802
        self,
        request: classification_pb2.ClassificationRequest,
        context: grpc.aio.ServicerContext,
    ) -> classification_pb2.ClassificationResponse:
        async def work() -> classification_pb2.ClassificationResponse:
            version, label = _version_choice(request.model_spec)
            servable = self.service.servable(request.model_spec.name, version, label)
            examples = input_examples(request.input)
            signature, labels, scores = await self.service.classify(
                servable, request.model_spec.signature_name, examples
            )
            response = classification_pb2.ClassificationResponse()
            set_model_spec(response.model_spec, servable, signature.name)
            fill_classifications(response.result, labels, scores)
            return response

        return await self.calls.run("classify", request.model_spec.name, context, work)

    async def Regress(  # noqa: N802
        self,
        request: regression_pb2.RegressionRequest,
        context: grpc.aio.ServicerContext,
    ) -> regression_pb2.RegressionResponse:
        async def work() -> regression_pb2.RegressionResponse:
            version, label = _version_choice(request.model_spec)
            servable = self.service.servable(request.model_spec.name, version, label)
            examples = input_examples(request.input)
            signature, values = await self.service.regress(
                servable, request.model_spec.signature_name, examples
            )
            response = regression_pb2.RegressionResponse()
            set_model_spec(response.model_spec, servable, signature.name)
            for value in values.tolist():
                response.result.regressions.add(value=value)
            return response

        return await self.calls.run("regress", request.model_spec.name, context, work)

    async def MultiInference(  # noqa: N802
        self,
        request: inference_pb2.MultiInferenceRequest,
        context: grpc.aio.ServicerContext,
    ) -> inference_pb2.MultiInferenceResponse:
        # As in TF Serving, the first task's ModelSpec picks the version, then every task
        # must name the same model.
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()

        async def work() -> inference_pb2.MultiInferenceResponse:
            version, label = _version_choice(first)
            servable = self.service.servable(first.name, version, label)
            multi_inference_model([task.model_spec.name for task in request.tasks])
            tasks = [(t.model_spec.signature_name, t.method_name) for t in request.tasks]
            examples = input_examples(request.input)
            results = await self.service.multi_inference(servable, tasks, examples)
            response = inference_pb2.MultiInferenceResponse()
            for signature, method, result in results:
                entry = response.results.add()
                set_model_spec(entry.model_spec, servable, signature.name)
                if method == CLASSIFY_METHOD:
                    labels, scores = result
                    fill_classifications(entry.classification_result, labels, scores)
                else:
                    for value in result.tolist():
                        entry.regression_result.regressions.add(value=value)
            return response

        return await self.calls.run("multi_inference", first.name, context, work)

    async def GetModelMetadata(  # noqa: N802
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        async def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            unsupported = [f for f in request.metadata_field if f != SIGNATURE_DEF_FIELD]
            if not request.metadata_field or unsupported:
                raise invalid_argument(
                    f"metadata_field must be ['{SIGNATURE_DEF_FIELD}'], "
                    f"got {list(request.metadata_field)}"
                )
            version, label = _version_choice(request.model_spec)
            servable = self.service.servable(request.model_spec.name, version, label)
            return self.service.metadata(servable)

        return await self.calls.run("metadata", request.model_spec.name, context, work)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: InferenceService, metrics: ServingMetrics) -> None:
        self.service = service
        self.calls = _Calls(metrics)

    async def GetModelStatus(  # noqa: N802
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        async def work() -> get_model_status_pb2.GetModelStatusResponse:
            version, label = _version_choice(request.model_spec)
            return self.service.status(request.model_spec.name, version, label)

        return await self.calls.run("status", request.model_spec.name, context, work)

    async def HandleReloadConfigRequest(  # noqa: N802
        self,
        request: model_management_pb2.ReloadConfigRequest,
        context: grpc.aio.ServicerContext,
    ) -> model_management_pb2.ReloadConfigResponse:
        async def work() -> model_management_pb2.ReloadConfigResponse:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                "HandleReloadConfigRequest is not supported by this server: it serves the "
                "models it was started with (--model-config-file is read once at start); "
                "restart it with the new configuration. New versions of the configured "
                "models are still picked up from their base paths.",
            )

        return await self.calls.run("reload_config", "", context, work)


def add_services(
    server: grpc.aio.Server, service: InferenceService, metrics: ServingMetrics
) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(service, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(service, metrics), server
    )
