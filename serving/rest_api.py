"""TF Serving's REST API on aiohttp: model status, metadata, ``:predict``,
``:classify`` and ``:regress`` under ``/v1/models/{name}[/versions/{v}|/labels/{l}]``, plus the
health and Prometheus metrics endpoints. Errors are ``{"error": "..."}`` with the
HTTP status TF Serving maps the error's code to. JSON formats are
``rest_format.py``; the operations are ``service.py``.

Every request under ``/v1/`` (any case, any method) is routed the way TF Serving's
REST handler routes it (``http_rest_api_handler.cc``, ``http_rest_api_util.cc``):
POST must be ``/v1/models/NAME[/versions/N|/labels/L]:(predict|classify|regress)``,
GET ``/v1/models[/NAME][/versions/N|/labels/L][/metadata]``; anything else is 400
"Malformed request: METHOD PATH", a version beyond int64 is 400 "Failed to convert
version", a GET without a model name 400 "Missing model name in request.". An
unexpected exception is logged with its traceback and answered 500 with
``INTERNAL_ERROR_MESSAGE`` only.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import rest_format
from serving.errors import (
    INTERNAL_ERROR_MESSAGE,
    ServingError,
    invalid_argument,
    not_found,
    too_large,
)
from serving.metrics import METRICS_PATH, ServingMetrics
from serving.service import InferenceService
from serving.ui import DrawPage

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
# Not part of TF Serving's REST API (its JSON bodies carry no version); a header
# leaves the bodies exactly as TF Serving's clients expect them.
VERSION_HEADER = "X-Model-Version"
# TF Serving's two path patterns, matched in full, case-insensitively, on the raw
# (still percent-encoded) path; the name and label are percent-decoded afterwards.
_PREDICT_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r":(?P<method>[a-z]+)",
    re.IGNORECASE | re.ASCII,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/(?P<name>[^/:]+))?"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<subresource>metadata))?",
    re.IGNORECASE | re.ASCII,
)
# What the POST path may end in; like TF Serving's handler, only in lower case.
_POST_METHODS = ("predict", "classify", "regress")
_INT64_MAX = 2**63 - 1
UNKNOWN_METHOD = "unknown"


@dataclass(frozen=True)
class ModelRequest:
    """What a /v1/models path names: the model, its version or label, and the method
    (status, metadata, predict, classify or regress)."""

    name: str
    method: str
    version: int | None = None
    label: str | None = None


def parse_model_path(http_method: str, raw_path: str) -> ModelRequest:
    """The request a ``/v1/...`` path and HTTP method make, or TF Serving's 400."""
    malformed = invalid_argument(f"Malformed request: {http_method} {raw_path}")
    if http_method == "POST":
        match = _PREDICT_PATH.fullmatch(raw_path)
    elif http_method == "GET":
        match = _STATUS_PATH.fullmatch(raw_path)
    else:
        raise malformed
    if match is None:
        raise malformed
    version = None
    if match["version"] is not None:
        digits = match["version"].lstrip("0") or "0"
        # Checked by length first: int() refuses strings of more than 4300 digits.
        if len(digits) > len(str(_INT64_MAX)) or int(digits) > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {match['version']} to numeric.")
        version = int(digits)
    name = unquote(match["name"] or "")
    label = unquote(match["label"]) if match["label"] is not None else None
    if http_method == "POST":
        if match["method"] not in _POST_METHODS:
            raise malformed
        return ModelRequest(name, match["method"], version, label)
    if not name:
        raise invalid_argument("Missing model name in request.")
    # TF Serving serves metadata only for the lower-case word; any other case is status.
    method = "metadata" if match["subresource"] == "metadata" else "status"
    return ModelRequest(name, method, version, label)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(message: str, status: int) -> web.Response:
    """``{"error": message}``, even for text orjson refuses (lone surrogates)."""
    try:
        return _json({"error": message}, status=status)
    except TypeError:  # orjson.JSONEncodeError
        safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return _json({"error": safe}, status=status)


def _proto_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


class RestApi:
    """The aiohttp handlers, bound to one InferenceService."""

    def __init__(
        self,
        service: InferenceService,
        metrics: ServingMetrics,
        max_request_bytes: int,
        ui: bool = False,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        # The draw-a-digit page (serving/ui/): GET / and /ui/samples; off with --no-ui.
        self.ui = ui

    def app(self) -> web.Application:
        # aiohttp enforces the same limit while reading; the handler checks first so
        # the refusal is a TF Serving style JSON error.
        app = web.Application(client_max_size=self.max_request_bytes)
        # Every method on every /v1/ path (in any case), as TF Serving's dispatcher
        # takes them: the handler answers what does not fit with "Malformed request".
        app.router.add_route("*", r"/{api:[vV]1}/{tail:[\s\S]*}", self.handle_model)
        app.router.add_get(HEALTH_PATH, self.handle_health)
        app.router.add_get(METRICS_PATH, self.handle_metrics)
        if self.ui:
            DrawPage(self.service).add_routes(app)
        return app

    async def handle_model(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name, method = "", UNKNOWN_METHOD
        try:
            if request.method == "OPTIONS":
                response = self._preflight(request)
            else:
                route = parse_model_path(request.method, request.rel_url.raw_path)
                name, method = route.name, route.method
                response = await self._dispatch(
                    route.method, request, route.name, route.version, route.label
                )
        except ServingError as error:
            response = _error(error.message, error.http_status)
        except Exception:  # noqa: BLE001 - a client gets a 500, the server goes on
            # The traceback goes to the log; the client gets no exception text, which
            # can name server paths.
            logger.exception("unexpected error on %s %s", request.method, request.path)
            response = _error(INTERNAL_ERROR_MESSAGE, 500)
        # Unknown model names are counted under one label value (metrics.UNKNOWN_MODEL).
        self.metrics.record(
            "rest", method, name, str(response.status), time.perf_counter() - started
        )
        return response

    @staticmethod
    def _preflight(request: web.Request) -> web.Response:
        """A CORS preflight, answered as TF Serving answers it: 200 with an http(s)
        Origin, else 400."""
        if re.search(r"https?://", request.headers.get("Origin", "")):
            return web.Response(status=200)
        return _error("Origin header is missing in CORS preflight", 400)

    async def _dispatch(
        self, method: str, request: web.Request, name: str, version: int | None, label: str | None
    ) -> web.Response:
        if method == "status":
            if name not in self.service.models.models:
                # GetModelStatus's own wording (get_model_status_impl.cc).
                raise not_found(
                    f"Could not find version {version} of model {name}"
                    if version is not None
                    else f"Could not find any versions of model {name}"
                )
            return _json(_proto_dict(self.service.status(name, version, label)))
        if method == "metadata":
            servable = self.service.servable(name, version, label)
            response = self.service.metadata(servable)
            signature_defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_defs)
            return _json(
                {
                    "model_spec": _proto_dict(response.model_spec),
                    "metadata": {"signature_def": _proto_dict(signature_defs)},
                }
            )
        # As TF Serving does: the body is parsed (and signature_name checked) before
        # the model is looked up, so a malformed body is a 400 even for an unknown model.
        body = rest_format.parse_json_body(await self._read_body(request))
        signature_name = rest_format.signature_name(body)
        servable = self.service.servable(name, version, label)
        headers = {VERSION_HEADER: str(servable.version)}
        if method == "predict":
            signature = servable.signature(signature_name)
            # Dtypes only, as TF Serving's REST API: shapes are the model's to check.
            inputs, row_format = rest_format.predict_inputs(body, signature.unshaped())
            _, outputs = await self.service.predict(servable, signature.name, inputs)
            return _json(rest_format.predict_response(outputs, row_format), headers=headers)
        if method == "classify":
            examples = rest_format.classify_examples(body)
            _, labels, scores = await self.service.classify(servable, signature_name, examples)
            return _json(rest_format.classify_response(labels, scores), headers=headers)
        # regress: the classify request format; results are one number per example.
        examples = rest_format.classify_examples(body)
        _, values = await self.service.regress(servable, signature_name, examples)
        return _json({"results": values.tolist()}, headers=headers)

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_request_bytes:
            raise _too_large(length, self.max_request_bytes)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(None, self.max_request_bytes) from None
        except RequestPayloadError as error:
            # The client's body is broken (e.g. Content-Encoding: gzip that is not gzip).
            cause = error.__cause__ or error
            detail = " ".join(str(getattr(cause, "message", "") or cause).split())
            raise invalid_argument(f"the request body cannot be read: {detail}") from None

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
