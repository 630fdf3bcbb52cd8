"""The one error type the serving code raises for a request it cannot answer,
carrying the gRPC status code TF Serving would return, and the HTTP status that
TF Serving's REST API maps that code to. Anything else a handler raises is the
server's own fault: it is logged with its traceback and answered with
``INTERNAL_ERROR_MESSAGE`` only (500 / INTERNAL), never the exception's text, which
can name server paths.
"""

from __future__ import annotations

import grpc

# TF Serving's REST API maps its status codes to these HTTP statuses
# (ToHTTPStatusCode in tensorflow_serving/model_servers/http_server.cc); the rest
# (UNKNOWN, INTERNAL, DATA_LOSS) are 500.
_HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


# The whole text of every 500 (REST) and INTERNAL (gRPC) answer; the details are in
# the server log.
INTERNAL_ERROR_MESSAGE = "Internal error; see the server log"


class ServingError(Exception):
    """A request the server refuses or cannot serve; ``str()`` is the text sent back."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        return self._http_status or _HTTP_STATUS.get(self.code, 500)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def too_large(message: str) -> ServingError:
    """An oversize request: RESOURCE_EXHAUSTED in gRPC terms, 413 Payload Too Large over HTTP."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=413)
