"""TF Serving's REST error cases against the running server: each malformed path or
method, bad version or label, unknown model or version, and malformed body gets the
status and the ``{"error": ...}`` body TF Serving's REST handler gives it.

The table is written from TF Serving's source (``model_servers/http_rest_api_handler.cc``,
``http_rest_api_util.cc`` and their tests, ``util/json_tensor.cc``,
``model_servers/get_model_status_impl.cc``, ``core/basic_manager.cc``,
``model_servers/server_core.cc``). Each row says what TF Serving answers and how our
text compares: ``==`` the same text, ``startswith`` TF Serving's text followed by
more detail (the versions served, the signatures there are), or ``prefix`` where
only TF Serving's leading words are the same (the JSON parser's own messages
differ: rapidjson there, orjson here).

The server is the shared read-only test server (``tests/serving_fixture.py``):
model ``mnist`` version 100, labelled ``stable``.
"""

from __future__ import annotations

import base64

import pytest
import requests

from tests.serving_fixture import (
    MODEL_NAME,
    SHARED_VERSION,
    ServerProcess,
    mnist_images,
    serialized_example,
    shared_server,
)

M = MODEL_NAME
V = SHARED_VERSION
UINT64_MAX = 2**64 - 1


def _example() -> dict[str, str]:
    return {"b64": base64.b64encode(serialized_example(mnist_images()[0][0])).decode()}


# One valid serving_default request: a serialized tf.Example as {"b64": ...}.
GOOD = "GOOD"

# (HTTP method, path, body, status, our message, how ours compares, TF Serving's message)
# A body of GOOD is a valid predict request; None sends no body; bytes are sent raw.
CASES = [
    # -- paths and methods (http_rest_api_handler_test.cc, HttpRestApiHandlerTest) --
    ("GET", "/v1/models", None, 400,
     "Missing model name in request.", "==", "Missing model name in request."),
    ("POST", "/v1/models", None, 400,
     "Malformed request: POST /v1/models", "==", "Malformed request: POST /v1/models"),
    ("GET", "/v1/foo", None, 400,
     "Malformed request: GET /v1/foo", "==", "Malformed request: GET /v1/foo"),
    ("POST", "/v1/foo", None, 400,
     "Malformed request: POST /v1/foo", "==", "Malformed request: POST /v1/foo"),
    ("GET", "/v1/models/", None, 400,
     "Malformed request: GET /v1/models/", "==", "Malformed request: GET /v1/models/"),
    ("GET", "/v1/models/debug/model_name", None, 400,
     "Malformed request: GET /v1/models/debug/model_name", "==",
     "Malformed request: GET /v1/models/debug/model_name"),
    ("GET", f"/v1/models/{M}:predict", None, 400,
     f"Malformed request: GET /v1/models/{M}:predict", "==",
     f"Malformed request: GET /v1/models/{M}:predict"),
    ("GET", f"/v1/models/{M}/version/50:predict", None, 400,
     f"Malformed request: GET /v1/models/{M}/version/50:predict", "==",
     f"Malformed request: GET /v1/models/{M}/version/50:predict"),
    ("POST", f"/v1/models/{M}/version/50:regress", GOOD, 400,
     f"Malformed request: POST /v1/models/{M}/version/50:regress", "==",
     f"Malformed request: POST /v1/models/{M}/version/50:regress"),
    ("POST", f"/v1/models/{M}/versions/HELLO:regress", GOOD, 400,
     f"Malformed request: POST /v1/models/{M}/versions/HELLO:regress", "==",
     f"Malformed request: POST /v1/models/{M}/versions/HELLO:regress"),
    ("POST", f"/v1/models/{M}/metadata", None, 400,
     f"Malformed request: POST /v1/models/{M}/metadata", "==",
     f"Malformed request: POST /v1/models/{M}/metadata"),
    ("POST", f"/v1/models/{M}/label/some_label:regress", GOOD, 400,
     f"Malformed request: POST /v1/models/{M}/label/some_label:regress", "==",
     f"Malformed request: POST /v1/models/{M}/label/some_label:regress"),
    ("POST", f"/v1/models/{M}/versions/50/labels/some_label:regress", GOOD, 400,
     f"Malformed request: POST /v1/models/{M}/versions/50/labels/some_label:regress", "==",
     f"Malformed request: POST /v1/models/{M}/versions/50/labels/some_label:regress"),
    ("POST", f"/v1/models/{M}/versions/some_label:regress", GOOD, 400,
     f"Malformed request: POST /v1/models/{M}/versions/some_label:regress", "==",
     f"Malformed request: POST /v1/models/{M}/versions/some_label:regress"),
    ("POST", f"/v1/models/{M}:explain", GOOD, 400,
     f"Malformed request: POST /v1/models/{M}:explain", "==",
     f"Malformed request: POST /v1/models/{M}:explain"),
    # The method is matched case-insensitively, then compared in lower case only.
    ("POST", f"/v1/models/{M}:PREDICT", GOOD, 400,
     f"Malformed request: POST /v1/models/{M}:PREDICT", "==",
     f"Malformed request: POST /v1/models/{M}:PREDICT"),
    ("PUT", f"/v1/models/{M}", None, 400,
     f"Malformed request: PUT /v1/models/{M}", "==", f"Malformed request: PUT /v1/models/{M}"),
    ("DELETE", f"/v1/models/{M}/versions/{V}", None, 400,
     f"Malformed request: DELETE /v1/models/{M}/versions/{V}", "==",
     f"Malformed request: DELETE /v1/models/{M}/versions/{V}"),
    # The raw path is quoted, percent-escapes and all.
    ("POST", "/v1/models/a%20b:explain", GOOD, 400,
     "Malformed request: POST /v1/models/a%20b:explain", "==",
     "Malformed request: POST /v1/models/a%20b:explain"),
    # -- versions that do not fit int64 (ParseModelInfo: absl::SimpleAtoi to int64) --
    ("POST", f"/v1/models/{M}/versions/{UINT64_MAX}:regress", GOOD, 400,
     f"Failed to convert version: {UINT64_MAX} to numeric.", "==",
     f"Failed to convert version: {UINT64_MAX} to numeric."),
    ("GET", f"/v1/models/{M}/versions/{2**63}", None, 400,
     f"Failed to convert version: {2**63} to numeric.", "==",
     f"Failed to convert version: {2**63} to numeric."),
    ("GET", f"/v1/models/{M}/versions/{2**63}/metadata", None, 400,
     f"Failed to convert version: {2**63} to numeric.", "==",
     f"Failed to convert version: {2**63} to numeric."),
    # -- unknown models and versions --
    ("GET", "/v1/models/fashion", None, 404,
     "Could not find any versions of model fashion", "==",
     "Could not find any versions of model fashion"),
    ("GET", "/v1/models/fashion/versions/7", None, 404,
     "Could not find version 7 of model fashion", "==",
     "Could not find version 7 of model fashion"),
    ("GET", f"/v1/models/{M}/versions/7", None, 404,
     f"Could not find version 7 of model {M}", "==", f"Could not find version 7 of model {M}"),
    ("GET", "/v1/models/fashion/metadata", None, 404,
     "Servable not found for request: Latest(fashion)", "==",
     "Servable not found for request: Latest(fashion)"),
    ("GET", f"/v1/models/{M}/versions/7/metadata", None, 404,
     f"Servable not found for request: Specific({M}, 7)", "startswith",
     f"Servable not found for request: Specific({M}, 7)"),
    ("POST", "/v1/models/fashion:predict", GOOD, 404,
     "Servable not found for request: Latest(fashion)", "==",
     "Servable not found for request: Latest(fashion)"),
    ("POST", f"/v1/models/{M}/versions/7:predict", GOOD, 404,
     f"Servable not found for request: Specific({M}, 7)", "startswith",
     f"Servable not found for request: Specific({M}, 7)"),
    ("POST", "/v1/models/fashion/versions/7:classify", {"examples": [{"x": 1}]}, 404,
     "Servable not found for request: Specific(fashion, 7)", "==",
     "Servable not found for request: Specific(fashion, 7)"),
    # -- version labels (ServerCore::GetModelVersionForLabel) --
    ("POST", f"/v1/models/{M}/labels/canary:predict", GOOD, 400,
     "Unrecognized servable version label: canary", "==",
     "Unrecognized servable version label: canary"),
    ("GET", f"/v1/models/{M}/labels/canary/metadata", None, 400,
     "Unrecognized servable version label: canary", "==",
     "Unrecognized servable version label: canary"),
    # -- request bodies (json_tensor.cc) --
    ("POST", f"/v1/models/{M}:predict", {"signature_name": 100}, 400,
     'JSON Value: {"signature_name":100} not formatted correctly. '
     "'signature_name' key must be a string value.", "==",
     "JSON Value: { \"signature_name\": 100 } not formatted correctly. "
     "'signature_name' key must be a string value."),
    ("POST", f"/v1/models/{M}:predict", b"", 400,
     "JSON Parse error: The document is empty", "==",
     "JSON Parse error: The document is empty"),
    ("POST", f"/v1/models/{M}:predict", b"instances = [1, 2]", 400,
     "JSON Parse error: ", "prefix", "JSON Parse error: Invalid value. at offset: 0"),
    # The body is parsed before the model is looked up.
    ("POST", "/v1/models/fashion:predict", b"instances = [1, 2]", 400,
     "JSON Parse error: ", "prefix", "JSON Parse error: Invalid value. at offset: 0"),
    ("POST", f"/v1/models/{M}:predict", b"[1, 2]", 400,
     "JSON Value: [1,2] Is not object", "==", "JSON Value: [1, 2] Is not object"),
    ("POST", f"/v1/models/{M}:predict", {"signature_name": "nope", "instances": [1]}, 400,
     'Serving signature name: "nope" not found in signature def', "startswith",
     'Serving signature name: "nope" not found in signature def'),
    ("POST", f"/v1/models/{M}:predict", {}, 400,
     "Missing 'inputs' or 'instances' key", "==", "Missing 'inputs' or 'instances' key"),
    ("POST", f"/v1/models/{M}:predict", {"instances": []}, 400,
     "JSON Value: {\"instances\":[]} No values in 'instances' array", "==",
     "JSON Value: { \"instances\": [] } No values in 'instances' array"),
    ("POST", f"/v1/models/{M}:predict", {"instances": 5}, 400,
     "JSON Value: {\"instances\":5} Expecting 'instances' to be an list/array", "==",
     "JSON Value: { \"instances\": 5 } Expecting 'instances' to be an list/array"),
    ("POST", f"/v1/models/{M}:predict", {"instances": [1], "inputs": [1]}, 400,
     "JSON Value: {\"instances\":[1],\"inputs\":[1]} Not formatted correctly expecting only "
     "one of 'inputs' or 'instances' keys to exist", "==",
     "JSON Value: { \"instances\": [1], \"inputs\": [1] } Not formatted correctly expecting "
     "only one of 'inputs' or 'instances' keys to exist "),
    # serving_default takes DT_STRING; ours names the input it was parsing first.
    ("POST", f"/v1/models/{M}:predict", {"instances": [1.5]}, 400,
     "instances (examples): JSON Value: 1.5 Type: Number is not of expected type: string",
     "prefix",
     "Failed to process element: 0 of 'instances' list. Error: Invalid argument: "
     "JSON Value: 1.5 Type: Number is not of expected type: string"),
    ("POST", f"/v1/models/{M}:classify", {"signature_name": "classify"}, 400,
     "JSON Value: {\"signature_name\":\"classify\"} When method is classify, key 'examples' "
     "is expected and was not found", "==",
     "JSON Value: { \"signature_name\": \"classify\" } When method is classify, key "
     "'examples' is expected and was not found"),
    ("POST", f"/v1/models/{M}:classify", {"signature_name": "classify", "examples": []}, 400,
     "JSON Value: {\"signature_name\":\"classify\",\"examples\":[]} 'examples' value is an "
     "empty array", "==",
     "JSON Value: { ... } 'examples' value is an empty array"),
    ("POST", f"/v1/models/{M}:classify", {"signature_name": "classify", "examples": [[1]]}, 400,
     "examples[0]: Example must be JSON object but got JSON Array", "prefix",
     "Example must be JSON object but got JSON Array"),
]  # fmt: skip


def _ids() -> list[str]:
    return [f"{method} {path} {str(body)[:30]}" for method, path, body, *_ in CASES]


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    return shared_server()


def send(server: ServerProcess, method: str, path: str, body) -> requests.Response:
    if body is GOOD:
        body = {"instances": [_example()]}
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    if body is None:
        kwargs = {}
    return requests.request(method, server.url + path, timeout=30, **kwargs)


def assert_good_request_answered(server: ServerProcess) -> None:
    response = send(server, "POST", f"/v1/models/{M}:predict", GOOD)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "ours", "how", "tf"), CASES, ids=_ids()
)
def test_error_as_tf_serving_gives_it(server, method, path, body, status, ours, how, tf):
    """Each case: TF Serving's status, a JSON body holding only "error", our text
    compared with TF Serving's as the row says; then a valid request is answered."""
    response = send(server, method, path, body)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert list(response.json()) == ["error"]
    error = response.json()["error"]
    if how == "==":
        assert error == ours
    else:
        assert error.startswith(ours), error
    if how in ("==", "startswith") and "JSON Value:" not in tf:
        # Where ours is TF Serving's text (the JSON it quotes aside), it starts the same.
        assert error.startswith(tf)
    assert_good_request_answered(server)


@pytest.mark.parametrize(
    "path",
    [f"/V1/MODELS/{M}", f"/v1/models/{M}/METADATA", "/v1/models/mn%69st"],
    ids=["upper-case", "metadata-in-upper-case-is-status", "percent-encoded-name"],
)
def test_paths_match_as_in_tf_serving(server, path):
    """TF Serving matches paths case-insensitively (its "metadata" only in lower case,
    so /METADATA asks for the status) and percent-decodes the model name."""
    response = requests.get(server.url + path, timeout=10)
    assert response.status_code == 200, response.text
    [status] = response.json()["model_version_status"]
    assert (status["version"], status["state"]) == (str(V), "AVAILABLE")


def test_cors_preflight(server):
    """OPTIONS, as TF Serving's dispatcher answers it: 200 with an http(s) Origin, else 400."""
    path = f"{server.url}/v1/models/{M}:predict"
    allowed = requests.options(path, headers={"Origin": "https://example.org"}, timeout=10)
    assert allowed.status_code == 200
    refused = requests.options(path, timeout=10)
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "Origin header is missing in CORS preflight"},
    )
