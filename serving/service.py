"""The operations both APIs offer, on protos and numpy arrays: resolve the model
version a request names, check inputs against the signature, predict, classify,
regress, multi-inference (on the batcher, with TF Serving's rules from
``signatures.py``), and answer metadata and status requests. The REST and gRPC
layers only translate their wire formats to and from these calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.batching import Batcher
from serving.request_log import RequestLogs
from serving.signatures import (
    CLASSIFY_METHOD,
    ServableModel,
    Signature,
    check_inputs,
    classification_result,
    classification_signature,
    examples_inputs,
    multi_inference_signatures,
    regression_result,
    regression_signature,
)
from serving.versions import ModelRegistry, VersionStatus

__all__ = ["InferenceService", "check_inputs", "set_model_spec"]

# A classification: per example, class labels [N, K] (None when the signature has no
# ``classes`` output) and scores [N, K]; a regression: one value per example [N].
Classification = tuple[np.ndarray | None, np.ndarray]


def set_model_spec(
    spec: model_pb2.ModelSpec, servable: ServableModel, signature_name: str = ""
) -> None:
    """Fill the ModelSpec a response echoes: the model, the version that answered and
    the signature used (TF Serving's MakeModelSpec; metadata leaves the signature
    empty). Written into the response's own field: no message built and copied."""
    spec.name = servable.model_name
    spec.signature_name = signature_name
    spec.version.value = servable.version


class InferenceService:
    """Model lookup plus the operations, shared by REST and gRPC."""

    def __init__(
        self, models: ModelRegistry, batcher: Batcher, request_logs: RequestLogs | None = None
    ) -> None:
        self.models = models
        self.batcher = batcher
        # Sampled calls go to the request logs (serving/request_log.py), off this path.
        self.request_logs = request_logs

    def servable(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServableModel:
        return self.models.resolve(name, version, label)

    async def predict(
        self, servable: ServableModel, signature_name: str, inputs: dict[str, np.ndarray]
    ) -> tuple[Signature, dict[str, np.ndarray]]:
        signature = servable.signature(signature_name)
        check_inputs(signature, inputs)
        outputs = await self.batcher.run(servable, signature, inputs)
        if self.request_logs is not None:
            self.request_logs.log_predict(servable, signature.name, inputs, outputs)
        return signature, outputs

    async def _run_examples(
        self, servable: ServableModel, signature: Signature, examples: Sequence[bytes]
    ) -> dict[str, np.ndarray]:
        inputs = examples_inputs(examples)
        check_inputs(signature, inputs)
        return await self.batcher.run(servable, signature, inputs)

    async def classify(
        self, servable: ServableModel, signature_name: str, examples: Sequence[bytes]
    ) -> tuple[Signature, np.ndarray | None, np.ndarray]:
        """Per example, class labels [N, K] (None when the model has none) and scores [N, K]
        (zeros when it has none)."""
        signature = classification_signature(servable, signature_name)
        outputs = await self._run_examples(servable, signature, examples)
        labels, scores = classification_result(outputs, len(examples))
        if self.request_logs is not None:
            self.request_logs.log_classify(servable, signature.name, examples, labels, scores)
        return signature, labels, scores

    async def regress(
        self, servable: ServableModel, signature_name: str, examples: Sequence[bytes]
    ) -> tuple[Signature, np.ndarray]:
        """One float32 value per example."""
        signature = regression_signature(servable, signature_name)
        outputs = await self._run_examples(servable, signature, examples)
        values = regression_result(outputs, len(examples))
        if self.request_logs is not None:
            self.request_logs.log_regress(servable, signature.name, examples, values)
        return signature, values

    async def multi_inference(
        self,
        servable: ServableModel,
        tasks: Sequence[tuple[str, str]],
        examples: Sequence[bytes],
    ) -> list[tuple[Signature, str, Classification | np.ndarray]]:
        """Each (signature name, method name) task on the same examples, in order: the
        signature, the method and its classification or regression."""
        planned = multi_inference_signatures(servable, tasks)
        results = []
        for signature, method in planned:
            outputs = await self._run_examples(servable, signature, examples)
            if method == CLASSIFY_METHOD:
                result: Classification | np.ndarray = classification_result(outputs, len(examples))
            else:
                result = regression_result(outputs, len(examples))
            results.append((signature, method, result))
        if self.request_logs is not None:
            self.request_logs.log_multi_inference(servable, examples, results)
        return results

    def metadata(self, servable: ServableModel) -> get_model_metadata_pb2.GetModelMetadataResponse:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        set_model_spec(response.model_spec, servable)
        response.metadata["signature_def"].Pack(servable.signature_def_map)
        return response

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        statuses = self.models.model(name, version).version_statuses(version, label)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            _add_status(response, status)
        return response


def _add_status(
    response: get_model_status_pb2.GetModelStatusResponse, status: VersionStatus
) -> None:
    entry = response.model_version_status.add()
    entry.version = status.version
    entry.state = status.state.value
    # TF Serving reports a failed load as END with the error (code UNKNOWN = 2).
    entry.status.error_code = 2 if status.error_message else 0
    entry.status.error_message = status.error_message
