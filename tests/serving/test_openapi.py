"""``serving/openapi.yaml``, the OpenAPI 3.1 description of the REST API, against the
server: the description is valid OpenAPI (schemathesis loads and validates it) and
every schema in it is valid JSON Schema 2020-12 whose references resolve; every
route the aiohttp app has, built with and without the draw-a-digit UI, is declared,
every declared operation is routed with the UI and all but the ``ui``-tagged ones
without it, and every declared operation exists (one
well-formed request per operation to the shared test server, its status, content
type, headers and body checked against what the operation declares, and every
other method/suffix under ``/v1/models/`` refused as a malformed URL); and the
description's examples, TF Serving's documented examples adapted to the MNIST
model, validate against their schemas and get the declared answers.

The helpers here (``load_spec``, ``operations``, ``check_response``) are also used
by ``test_fuzz.py``.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import numpy as np
import pytest
import requests
import schemathesis
import tensorflow as tf
import yaml

from tests.serving_fixture import (
    MODEL_NAME,
    SHARED_VERSION,
    ServerProcess,
    mnist_images,
    serialized_example,
    shared_server,
)

SPEC_RESOURCE = importlib.resources.files("serving").joinpath("openapi.yaml")
LABEL = "stable"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# The tag of the draw-a-digit page's operations, routed only with the UI (not --no-ui).
UI_TAG = "ui"
# The path parameters of the shared server's model (tests/serving_fixture.py).
PATH_VALUES = {"model": MODEL_NAME, "version": str(SHARED_VERSION), "label": LABEL}


@functools.cache
def load_spec() -> dict[str, Any]:
    """The description as a dict, read from the installed ``serving`` package."""
    return yaml.safe_load(SPEC_RESOURCE.read_text(encoding="utf-8"))


def operations(spec: dict[str, Any] | None = None) -> dict[str, tuple[str, str, dict]]:
    """operationId -> (HTTP method, path template, operation object)."""
    spec = spec or load_spec()
    found = {}
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                found[item[method]["operationId"]] = (method.upper(), path, item[method])
    return found


def resolve(node: Any, spec: dict[str, Any] | None = None) -> Any:
    """An OpenAPI object with its (local) ``$ref`` followed."""
    spec = spec or load_spec()
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        node = pointer(spec, node["$ref"])
    return node


def pointer(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used, got {ref}"
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def schema_validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator for a schema of the description, its
    ``#/components/...`` references resolving inside the description."""
    return jsonschema.Draft202012Validator({**schema, "components": load_spec()["components"]})


def fill_path(template: str, values: dict[str, str] | None = None) -> str:
    values = values or PATH_VALUES
    return re.sub(r"\{(\w+)\}", lambda m: values[m[1]], template)


def check_response(operation_id: str, response: requests.Response) -> dict[str, Any]:
    """The response has a status the operation declares, that status's content type,
    its required headers, and a body valid against its schema. Returns the JSON body
    (or {} for a non-JSON one)."""
    method, path, operation = operations()[operation_id]
    status = str(response.status_code)
    declared = operation["responses"]
    assert status in declared, (
        f"{method} {path}: status {status} is not declared (declared {sorted(declared)}): "
        f"{response.text[:500]}"
    )
    answer = resolve(declared[status])
    for name, header in answer.get("headers", {}).items():
        header = resolve(header)
        if header.get("required"):
            assert name in response.headers, f"{method} {path} {status}: no {name} header"
            schema_validator(header["schema"]).validate(response.headers[name])
    content = answer.get("content", {})
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media_type in content, (
        f"{method} {path} {status}: Content-Type {media_type!r}, declared {sorted(content)}"
    )
    if media_type != "application/json":
        schema_validator(content[media_type]["schema"]).validate(response.text)
        return {}
    body = response.json()
    errors = sorted(schema_validator(content[media_type]["schema"]).iter_errors(body), key=str)
    assert not errors, (
        f"{method} {path} {status}: body does not match the declared schema: "
        f"{errors[0].message} at {list(errors[0].absolute_path)}\n{response.text[:500]}"
    )
    return body


def send(
    server: ServerProcess,
    operation_id: str,
    body: Any = None,
    values: dict | None = None,
    params: dict[str, str] | None = None,
) -> requests.Response:
    method, path, _ = operations()[operation_id]
    return requests.request(
        method, server.url + fill_path(path, values), json=body, params=params, timeout=60
    )


def ui_operations() -> set[str]:
    """The operationIds tagged ``ui``: the page's, which exist only with the UI."""
    return {
        operation_id
        for operation_id, (_, _, operation) in operations().items()
        if UI_TAG in operation.get("tags", [])
    }


def iter_schemas(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Schema Object of the description (components, parameters, media types,
    headers), with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}/{key}"
            if key == "schema" and isinstance(value, dict):
                yield here, value
            elif key == "schemas" and where == "#/components":
                for name, schema in value.items():
                    yield f"{here}/{name}", schema
            else:
                yield from iter_schemas(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from iter_schemas(value, f"{where}/{index}")


def iter_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_refs(value)


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    return shared_server()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return mnist_images()[0][0]


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


# --- the description itself -------------------------------------------------------------------


EXPECTED_OPERATIONS = {
    "getModelStatus": ("GET", "/v1/models/{model}"),
    "getModelVersionStatus": ("GET", "/v1/models/{model}/versions/{version}"),
    "getModelLabelStatus": ("GET", "/v1/models/{model}/labels/{label}"),
    "getModelMetadata": ("GET", "/v1/models/{model}/metadata"),
    "getModelVersionMetadata": ("GET", "/v1/models/{model}/versions/{version}/metadata"),
    "getModelLabelMetadata": ("GET", "/v1/models/{model}/labels/{label}/metadata"),
    "predict": ("POST", "/v1/models/{model}:predict"),
    "predictVersion": ("POST", "/v1/models/{model}/versions/{version}:predict"),
    "predictLabel": ("POST", "/v1/models/{model}/labels/{label}:predict"),
    "classify": ("POST", "/v1/models/{model}:classify"),
    "classifyVersion": ("POST", "/v1/models/{model}/versions/{version}:classify"),
    "classifyLabel": ("POST", "/v1/models/{model}/labels/{label}:classify"),
    "regress": ("POST", "/v1/models/{model}:regress"),
    "regressVersion": ("POST", "/v1/models/{model}/versions/{version}:regress"),
    "regressLabel": ("POST", "/v1/models/{model}/labels/{label}:regress"),
    "health": ("GET", "/healthz"),
    "prometheusMetrics": ("GET", "/monitoring/prometheus/metrics"),
    "drawPage": ("GET", "/"),
    "uiSamples": ("GET", "/ui/samples"),
}


def test_description_is_valid_openapi_and_loads_in_schemathesis():
    """schemathesis loads the file from the package and validates it against the
    OpenAPI 3.1 meta-schema; it sees exactly the operations TF Serving documents plus
    the two extras and the draw-a-digit page's two, which alone are tagged ``ui``; a
    broken copy is refused, so the validation is not vacuous."""
    spec = load_spec()
    assert spec["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_path(str(SPEC_RESOURCE))
    loaded.validate()
    seen = sorted(
        (result.ok().method.upper(), result.ok().path) for result in loaded.get_all_operations()
    )
    assert seen == sorted(EXPECTED_OPERATIONS.values())
    assert {k: v[:2] for k, v in operations().items()} == EXPECTED_OPERATIONS
    assert ui_operations() == {"drawPage", "uiSamples"}
    for breakage, message in (
        (lambda doc: doc["info"].pop("title"), "title"),
        (lambda doc: doc["components"]["parameters"]["version"].update({"in": "body"}), "body"),
        (lambda doc: doc["paths"]["/healthz"]["get"]["responses"].update({"2000": {}}), "2000"),
    ):
        broken = yaml.safe_load(SPEC_RESOURCE.read_text(encoding="utf-8"))
        breakage(broken)
        with pytest.raises(Exception, match=message):
            schemathesis.openapi.from_dict(broken).validate()


def test_every_schema_is_valid_json_schema_and_every_reference_resolves():
    spec = load_spec()
    schemas = dict(iter_schemas(spec))
    assert len(schemas) > 30
    for where, schema in schemas.items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            pytest.fail(f"{where}: not a valid JSON Schema 2020-12: {error.message}")
    refs = set(iter_refs(spec))
    assert refs
    for ref in refs:
        pointer(spec, ref)  # KeyError names a dangling reference
    # Every component is used somewhere (Int64 and B64 inside other schemas).
    for kind, components in spec["components"].items():
        for name in components:
            assert f"#/components/{kind}/{name}" in refs, f"components/{kind}/{name} is unused"


def test_the_schemas_accept_tf_servings_documented_bodies_and_refuse_others():
    """The JSON bodies api_rest.md shows validate; bodies breaking its rules do not."""
    schemas = load_spec()["components"]["schemas"]
    valid = {
        "PredictRequest": [
            {"instances": ["foo", "bar", "baz"]},
            {"instances": [[[1, 2]], [[3, 4]]]},
            {
                "instances": [
                    {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
                    {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
                ]
            },
            {
                "inputs": {
                    "tag": ["foo", "bar"],
                    "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
                    "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
                }
            },
            {"signature_name": "predict_images", "inputs": [[0.5] * 784]},
            {"instances": [{"b64": "aW1hZ2UgYnl0ZXM="}]},
            {"instances": [True, False]},
        ],
        "ExamplesRequest": [
            {
                "signature_name": "classify_objects",
                "examples": [
                    {"image": {"b64": "aW1hZ2UgYnl0ZXM="}, "caption": "seaside"},
                    {"image": {"b64": "YXdlc29tZSBpbWFnZSBieXRlcw=="}, "caption": "mountains"},
                ],
            },
            {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]},
            {"context": {"a": [1, 2]}, "examples": [{"b": "x"}]},
        ],
        "PredictResponse": [
            {"predictions": [3.5, 4.0, 5.5]},
            {"predictions": [{"classes": 7, "probabilities": [0.1, 0.9], "name": "x"}]},
            {"outputs": {"scores": [[0.5, None]], "data_bytes": [{"b64": "AA=="}]}},
            {"outputs": [[1, 2]]},
        ],
        "ClassifyResponse": [{"results": [[["0", 0.1], ["1", 0.9]], [["", 1.0]]]}],
        "RegressResponse": [{"results": [3.5, 4.0]}],
        "Error": [{"error": "Servable not found for request: Latest(half)"}],
    }
    invalid = {
        "PredictRequest": [
            {},
            {"instances": [1], "inputs": [1]},
            {"instances": []},
            {"instances": [1], "signature_name": 5},
            {"inputs": {}},
            {"inputs": [{"b64": 5}]},
        ],
        "ExamplesRequest": [
            {},
            {"examples": []},
            {"examples": [[1]]},
            {"examples": [{"a": [[1]]}]},
        ],
        "PredictResponse": [{}, {"predictions": 1}, {"outputs": 1, "predictions": [1]}],
        "ClassifyResponse": [
            {"result": []},
            {"results": [[["a", 1.0, 2]]]},
            {"results": [[[1, 1]]]},
        ],
        "RegressResponse": [{"results": ["a"]}],
        "Error": [{}, {"error": 1}, {"error": "x", "code": 3}],
    }
    for name, bodies in valid.items():
        validator = schema_validator(schemas[name])
        for body in bodies:
            assert validator.is_valid(body), (name, body, next(validator.iter_errors(body)))
    for name, bodies in invalid.items():
        validator = schema_validator(schemas[name])
        for body in bodies:
            assert not validator.is_valid(body), (name, body)


def _examples(node: Any, where: str = "#") -> Iterator[tuple[str, dict, Any]]:
    """(where, schema, example value) for every example next to a schema."""
    if isinstance(node, dict):
        if "schema" in node:
            if "example" in node:
                yield where, node["schema"], node["example"]
            for name, example in node.get("examples", {}).items():
                yield f"{where}/examples/{name}", node["schema"], resolve(example)["value"]
        for key, value in node.items():
            yield from _examples(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _examples(value, f"{where}/{index}")


def test_every_example_matches_its_schema():
    found = list(_examples(load_spec()))
    assert len(found) >= 15
    for where, schema, value in found:
        errors = list(schema_validator(schema).iter_errors(value))
        assert not errors, f"{where}: {errors[0].message}"


# --- the description against the server --------------------------------------------------------


def _route_matches(route: Any, method: str, path: str) -> bool:
    if route.method not in ("*", method):
        return False
    info = route.resource.get_info()
    if "path" in info:
        return info["path"] == path
    return info["pattern"].fullmatch(path) is not None


@pytest.mark.parametrize("ui", [True, False], ids=["with-ui", "no-ui"])
def test_every_route_of_the_app_is_declared_and_every_operation_routed(ui):
    """Read from the aiohttp app's router, built as the server builds it with its
    draw-a-digit UI (the default) and with ``--no-ui``: every route (a catch-all ``*``
    route counts for any method) serves at least one declared operation; with the UI
    every declared operation, its path filled in, is matched by a route for its
    method, and without it every one but those tagged ``ui``, which must then match no
    route. HEAD routes are aiohttp's automatic ones for GET."""
    from serving.rest_api import RestApi

    app = RestApi(None, None, 1024, ui=ui).app()
    built = "the app with the UI" if ui else "the app without the UI (--no-ui)"
    routes = [route for route in app.router.routes() if route.method != "HEAD"]
    declared = {
        operation_id: (method, fill_path(path))
        for operation_id, (method, path, _) in operations().items()
    }
    assert routes
    for route in routes:
        assert any(_route_matches(route, m, p) for m, p in declared.values()), (
            f"route {route.method} {route.resource.canonical} of {built} serves no operation "
            f"declared in {SPEC_RESOURCE.name}"
        )
    ui_only = ui_operations()
    for operation_id, (method, path) in declared.items():
        routed = any(_route_matches(route, method, path) for route in routes)
        if ui or operation_id not in ui_only:
            assert routed, f"declared {method} {path} ({operation_id}) has no route in {built}"
        else:
            assert not routed, (
                f"declared {method} {path} ({operation_id}) is tagged {UI_TAG!r} (only with "
                f"the UI) but {built} routes it"
            )


WELL_FORMED_BODIES = {
    "predict": lambda image: {"instances": [b64(serialized_example(image))]},
    "classify": lambda image: {
        "signature_name": "classify",
        "examples": [{"image": b64(image.tobytes())}],
    },
    # The MNIST model has no regress signature: a well-formed request gets 400.
    "regress": lambda image: {
        "signature_name": "classify",
        "examples": [{"image": b64(image.tobytes())}],
    },
}
# Query parameters of the operations that take them.
WELL_FORMED_QUERIES = {"uiSamples": {"model": MODEL_NAME}}


def _kind(operation_id: str) -> str:
    return re.sub(r"(Version|Label)$", "", operation_id)


@pytest.mark.parametrize("operation_id", sorted(EXPECTED_OPERATIONS))
def test_one_well_formed_request_per_operation(server, image, operation_id):
    """Each declared operation exists on the server: a well-formed request gets the
    answer it declares (200; 400 for :regress, which the MNIST model has no signature
    for), valid against the declared schema. The shared server runs with its UI, so
    the page's operations are there too."""
    kind = _kind(operation_id)
    body = WELL_FORMED_BODIES[kind](image) if kind in WELL_FORMED_BODIES else None
    response = send(server, operation_id, body, params=WELL_FORMED_QUERIES.get(operation_id))
    expected = 400 if kind == "regress" else 200
    assert response.status_code == expected, response.text[:500]
    body = check_response(operation_id, response)
    if kind == "predict":
        assert response.headers["X-Model-Version"] == str(SHARED_VERSION)
        assert len(body["predictions"]) == 1
    if kind == "classify":
        assert [label for label, _ in body["results"][0]] == [str(d) for d in range(10)]
    if kind in ("getModelStatus", "getModelVersionStatus", "getModelLabelStatus"):
        assert [s["version"] for s in body["model_version_status"]] == [str(SHARED_VERSION)]
    if kind.endswith("Metadata"):
        assert body["model_spec"]["version"] == str(SHARED_VERSION)
        assert "serving_default" in body["metadata"]["signature_def"]["signature_def"]
    if kind == "drawPage":
        assert 'id="ui-models"' in response.text
    if kind == "uiSamples":
        assert (body["model"], body["version"]) == (MODEL_NAME, SHARED_VERSION)
        assert body["images"] and len(body["labels"]) == len(body["images"])


MODEL_TARGETS = ("{model}", "{model}/versions/{version}", "{model}/labels/{label}")
SUFFIXES = ("", "/metadata", ":predict", ":classify", ":regress", ":explain", "/status", ":")


def test_nothing_undeclared_is_served_under_v1_models(server):
    """Every method/suffix combination under /v1/models/: a declared one is routed (its
    answer is not "Malformed request"), an undeclared one is refused, as a malformed
    URL (TF Serving's message) or with 405. OPTIONS is TF Serving's CORS preflight
    (the description's info says so): 200 with an http(s) Origin, else 400."""
    declared = {(method, path) for method, path, _ in operations().values()}
    body = {"instances": [b64(serialized_example(mnist_images()[0][0]))]}
    for target in MODEL_TARGETS:
        for suffix in SUFFIXES:
            template = f"/v1/models/{target}{suffix}"
            url = server.url + fill_path(template)
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                response = requests.request(
                    method, url, json=body if method != "GET" else None, timeout=60
                )
                is_json = response.headers.get("Content-Type", "").startswith("application/json")
                error = response.json().get("error", "") if is_json else ""
                where = (method, template, response.status_code, response.text[:200])
                if (method, template) in declared:
                    assert "Malformed request" not in error, where
                else:
                    assert response.status_code in (400, 404, 405), where
                    assert response.status_code == 405 or error.startswith("Malformed request"), (
                        where
                    )
            preflight = requests.options(url, headers={"Origin": "http://x.example"}, timeout=60)
            assert preflight.status_code == 200, (template, preflight.text)
            assert requests.options(url, timeout=60).status_code == 400


# --- TF Serving's documented examples, adapted -------------------------------------------------


def _request_examples() -> list[tuple[str, str]]:
    found = []
    for operation_id, (_, _, operation) in operations().items():
        if "requestBody" not in operation or not operation_id.islower():
            continue  # each body example once, on the unversioned path
        content = resolve(operation["requestBody"])["content"]["application/json"]
        found += [(operation_id, name) for name in content.get("examples", {})]
    return sorted(found)


@pytest.mark.parametrize(("operation_id", "example"), _request_examples())
def test_documented_request_examples_get_the_declared_answer(server, operation_id, example):
    """Each request example of the description sent to the server as written: 200
    with a body valid against the schema (400 for TF Serving's regress example, the
    MNIST model has no regress signature); the predict examples of the same image in
    every format agree on its class."""
    _, _, operation = operations()[operation_id]
    content = resolve(operation["requestBody"])["content"]["application/json"]
    body = resolve(content["examples"][example])["value"]
    response = send(server, operation_id, body)
    expected = 400 if operation_id == "regress" else 200
    assert response.status_code == expected, response.text[:500]
    answer = check_response(operation_id, response)
    if operation_id == "predict":
        first = answer.get("predictions", [None])[0] or {
            key: value[0] for key, value in answer["outputs"].items()
        }
        assert first["classes"] == _direct_class(server)
    if operation_id == "classify":
        for row in answer["results"]:
            scores = [score for _, score in row]
            assert int(np.argmax(scores)) == _direct_class(server)


@functools.cache
def _direct_class_cached(url: str, image_bytes: bytes) -> int:
    response = requests.post(
        f"{url}/v1/models/{MODEL_NAME}:predict",
        json={
            "instances": [
                b64(serialized_example(np.frombuffer(image_bytes, np.uint8).reshape(28, 28)))
            ]
        },
        timeout=60,
    )
    return response.json()["predictions"][0]["classes"]


def _direct_class(server: ServerProcess) -> int:
    """The class serving_default gives the example image (MNIST's first test image)."""
    return _direct_class_cached(server.url, mnist_images()[0][0].tobytes())


def test_documented_status_and_error_examples_are_the_servers_answers(server):
    """TF Serving's curl examples: the model status (our version 100 for its 123), and
    POST /v1/models/half:predict giving 404 with exactly its error body."""
    spec = load_spec()
    status = requests.get(f"{server.url}/v1/models/{MODEL_NAME}", timeout=30)
    documented = spec["components"]["responses"]["ModelStatus"]["content"]["application/json"]
    assert status.json() == documented["example"]
    half = requests.post(
        f"{server.url}/v1/models/half:predict", json={"instances": [1.0, 5.0]}, timeout=30
    )
    assert half.status_code == 404
    assert half.headers["Content-Type"].startswith("application/json")
    assert half.json() == {"error": "Servable not found for request: Latest(half)"}
    assert (
        half.json()
        == spec["components"]["responses"]["NotFound"]["content"]["application/json"]["example"]
    )
    check_response("predict", half)
    health = requests.get(f"{server.url}/healthz", timeout=30)
    documented = spec["paths"]["/healthz"]["get"]["responses"]["200"]["content"]
    assert health.json() == documented["application/json"]["example"]


@pytest.mark.parametrize(("status", "params"), [("400", {}), ("404", {"model": "nope"})])
def test_documented_ui_samples_errors_are_the_servers_answers(server, status, params):
    """The error examples of ``GET /ui/samples`` are what the shared server (model
    ``mnist``) answers, body for body. (Its 503, no version loaded yet, cannot happen on
    a server that is serving.)"""
    response = send(server, "uiSamples", params=params)
    assert response.status_code == int(status), response.text[:500]
    check_response("uiSamples", response)
    _, _, operation = operations()["uiSamples"]
    documented = resolve(operation["responses"][status])["content"]["application/json"]
    assert response.json() == documented["example"]


def test_example_image_is_the_fixtures_first_test_image():
    """The pixel, raw-bytes and serialized-Example forms of the description's example
    image are the same image, MNIST's first test image."""
    bodies = load_spec()["components"]["requestBodies"]
    predict = bodies["Predict"]["content"]["application/json"]["examples"]
    classify = bodies["Classify"]["content"]["application/json"]["examples"]
    image = mnist_images()[0][0]
    pixels = np.array(predict["row_uint8"]["value"]["instances"][0], np.uint8)
    np.testing.assert_array_equal(pixels, image)
    raw = classify["image_bytes"]["value"]["examples"][0]["image"]["b64"]
    assert base64.b64decode(raw, validate=True) == image.tobytes()
    serialized = predict["row_b64"]["value"]["instances"][0]["b64"]
    example = tf.train.Example.FromString(base64.b64decode(serialized, validate=True))
    # Compared as messages: the order of a proto map's entries is not fixed.
    assert example == tf.train.Example.FromString(serialized_example(image, 7))
