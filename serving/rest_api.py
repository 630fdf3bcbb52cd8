"""TF Serving's REST API on aiohttp: model status, metadata, ``:predict`` and
``:classify`` under ``/v1/models/{name}[/versions/{v}|/labels/{l}]``, plus the
health and Prometheus metrics endpoints. Errors are ``{"error": "..."}`` with the
HTTP status TF Serving maps the error's code to. JSON formats are
``rest_format.py``; the operations are ``service.py``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import rest_format
from serving.errors import ServingError, invalid_argument, not_found, too_large
from serving.metrics import METRICS_PATH, ServingMetrics
from serving.service import InferenceService
from serving.versions import parse_version

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
# Not part of TF Serving's REST API (its JSON bodies carry no version); a header
# leaves the bodies exactly as TF Serving's clients expect them.
VERSION_HEADER = "X-Model-Version"
_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict|:classify|:regress)?$"
)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _proto_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


class RestApi:
    """The aiohttp handlers, bound to one InferenceService."""

    def __init__(
        self, service: InferenceService, metrics: ServingMetrics, max_request_bytes: int
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes

    def app(self) -> web.Application:
        # aiohttp enforces the same limit while reading; the handler checks first so
        # the refusal is a TF Serving style JSON error.
        app = web.Application(client_max_size=self.max_request_bytes)
        app.router.add_route("GET", "/v1/models/{tail:.*}", self.handle_model)
        app.router.add_route("POST", "/v1/models/{tail:.*}", self.handle_model)
        app.router.add_get(HEALTH_PATH, self.handle_health)
        app.router.add_get(METRICS_PATH, self.handle_metrics)
        return app

    async def handle_model(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        match = _MODEL_PATH.match(request.path)
        name = match["name"] if match else "-"
        method = self._method(request.method, match)
        try:
            if method is None:
                raise not_found(f"Malformed request: {request.method} {request.path}")
            version = parse_version(match["version"]) if match["version"] else None
            response = await self._dispatch(method, request, name, version, match["label"])
        except ServingError as error:
            response = _json({"error": error.message}, status=error.http_status)
        except Exception as error:  # noqa: BLE001 - a client gets a 500, the server goes on
            logger.exception("unexpected error on %s %s", request.method, request.path)
            response = _json({"error": f"internal error: {error}"}, status=500)
        self.metrics.record(
            "rest", method or "unknown", name, str(response.status), time.perf_counter() - started
        )
        return response

    @staticmethod
    def _method(http_method: str, match: re.Match | None) -> str | None:
        if match is None:
            return None
        suffix = match["suffix"]
        if http_method == "GET":
            return {None: "status", "/metadata": "metadata"}.get(suffix)
        return {":predict": "predict", ":classify": "classify", ":regress": "regress"}.get(suffix)

    async def _dispatch(
        self, method: str, request: web.Request, name: str, version: int | None, label: str | None
    ) -> web.Response:
        if method == "status":
            return _json(_proto_dict(self.service.status(name, version, label)))
        servable = self.service.servable(name, version, label)
        if method == "metadata":
            response = self.service.metadata(servable)
            signature_defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_defs)
            return _json(
                {
                    "model_spec": _proto_dict(response.model_spec),
                    "metadata": {"signature_def": _proto_dict(signature_defs)},
                }
            )
        body = rest_format.parse_json_body(await self._read_body(request))
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' must be a string")
        headers = {VERSION_HEADER: str(servable.version)}
        if method == "predict":
            signature = servable.signature(signature_name)
            inputs, row_format = rest_format.predict_inputs(body, signature)
            _, outputs = await self.service.predict(servable, signature.name, inputs)
            return _json(rest_format.predict_response(outputs, row_format), headers=headers)
        if method == "classify":
            examples = rest_format.classify_examples(body)
            _, labels, scores = await self.service.classify(servable, signature_name, examples)
            return _json(rest_format.classify_response(labels, scores), headers=headers)
        raise invalid_argument(f"{method} is not supported by this server: no regression models")

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_request_bytes:
            raise _too_large(length, self.max_request_bytes)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(None, self.max_request_bytes) from None

    async def handle_health(self, request: web.Request) -> web.Response:
        models = {
            name: sorted(served.serving) for name, served in self.service.models.models.items()
        }
        healthy = all(models.values())
        return _json(
            {"status": "ok" if healthy else "unavailable", "serving_versions": models},
            status=200 if healthy else 503,
        )

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response


def _too_large(length: int | None, limit: int) -> ServingError:
    size = f"of {length} bytes " if length is not None else ""
    return too_large(
        f"request body {size}is larger than the limit of {limit} bytes (--max-request-bytes)"
    )
