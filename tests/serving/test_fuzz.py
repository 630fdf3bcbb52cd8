"""Property-based fuzzing of the server's REST and gRPC APIs, against a server this
module starts (``python -m serving.server`` serving two trained MNIST versions, 1 and
2, labelled ``stable`` and ``canary``).

- REST from its description (``serving/openapi.yaml``) with schemathesis: every
  operation gets its examples, schemathesis's coverage cases and ``REST_EXAMPLES``
  generated requests, valid and invalid; no answer may be a 5xx, and every answer must
  have a declared status, content type, headers and a body valid against its schema.
- REST with hand-written hostile generators (hypothesis): random bytes, bodies that
  are not UTF-8, nesting up to thousands of levels, numbers no dtype holds, values of
  every JSON type where tensors and features go, and random model names and labels in
  the URL; each answer must be one the operation declares, never a 5xx.
- gRPC with hypothesis strategies for PredictRequest (TensorProtos of random dtypes,
  shapes (negative, huge, promising more elements than they carry), value fields and
  packed bytes; random model names, versions, labels, signatures and output filters),
  Classify/Regress/MultiInference requests of random ``tf.train.Example``s (random
  features, wrong types, byte strings beyond the size limit) and GetModelMetadata /
  GetModelStatus requests, sent with the official stubs, each with a deadline: the
  answer must be OK or a status code other than INTERNAL, UNKNOWN, DATA_LOSS and
  DEADLINE_EXCEEDED.

The last test checks that the server still answers valid REST and gRPC requests,
that its peak resident memory (VmHWM) stayed under ``PEAK_RSS_BOUND``, prints the
counts (requests per API and method, answers by status, 5xx and INTERNAL answers)
and fails listing every conformance finding with its shortest request.

Budget: ``make test`` runs a bounded number of examples, deterministically
(``derandomize``). ``MNIST_TFX_FUZZ_EXAMPLES=N`` (``make fuzz`` sets 2000) gives every
generator N examples, with random seeds.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import resource
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import schemathesis
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.serving.test_openapi import SPEC_RESOURCE, check_response, fill_path, operations
from tests.serving_fixture import (
    MODEL_NAME,
    ServerProcess,
    exported_versions,
    mnist_images,
    push,
    serialized_example,
)

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES_ENV = "MNIST_TFX_FUZZ_EXAMPLES"
LONG_RUN = int(os.environ.get(FUZZ_EXAMPLES_ENV) or 0)
# Generated requests per REST operation (schemathesis adds its examples and coverage
# cases, a few dozen more per operation), per hostile REST generator, per gRPC method.
REST_EXAMPLES = LONG_RUN or 10
HOSTILE_EXAMPLES = LONG_RUN or 120
GRPC_EXAMPLES = LONG_RUN or 400

# The largest request body (REST) and message (gRPC) the fuzzed server takes.
MAX_REQUEST_BYTES = 1 << 20
# Peak resident memory allowed to the server. Loaded with two versions it holds about
# 0.7 GiB (TensorFlow's runtime, the model, gRPC and aiohttp). The largest input a
# request can carry is bounded by MAX_REQUEST_BYTES: 1 MiB of packed float pixels is
# about 330 images, whose activations in the CNN take well under 0.5 GiB. 2 GiB
# leaves room for TensorFlow's and malloc's caches, and fails a server that
# materialises what a request only claims (a shape promising more elements than it
# carries, a batch built from a few bytes).
PEAK_RSS_BOUND = 2 << 30
# The fuzzed server's address space is capped at its size once serving plus this, so
# a request that makes it allocate gigabytes fails inside the server (and is reported)
# instead of taking the memory of the machine the tests share.
ADDRESS_SPACE_HEADROOM = 3 << 30
CALL_TIMEOUT = 30.0

STABLE, CANARY = 1, 2
# Signature names of the MNIST export, old and new, and some that no model has.
SIGNATURES = [
    "",
    "serving_default",
    "predict_images",
    "predict_pixels",
    "predict_pixels_uint8",
    "predict_images_uint8",
    "classify",
    "__saved_model_init_op",
    "tensorflow/serving/regress",
    "nope",
]
INPUT_KEYS = ["images", "examples", "inputs", "x", ""]
OUTPUT_KEYS = ["classes", "probabilities", "class_names", "scores", "outputs", "nope"]
BAD_GRPC_CODES = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
FUZZ_SETTINGS = settings(
    max_examples=HOSTILE_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not LONG_RUN,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


class Tally:
    """What the fuzzing sent and got, kept across this module's tests."""

    def __init__(self) -> None:
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.answers: collections.Counter[tuple[str, str]] = collections.Counter()
        self.server_errors: collections.Counter[str] = collections.Counter()
        # (api, what went wrong) -> the shortest request that did it
        self.findings: dict[tuple[str, str], str] = {}

    def sent(self, api: str, method: str, answer: str) -> None:
        self.requests[(api, method)] += 1
        self.answers[(api, answer)] += 1

    def finding(self, api: str, what: str, request: str) -> None:
        key = (api, what)
        if key not in self.findings or len(request) < len(self.findings[key]):
            self.findings[key] = request


TALLY = Tally()


@pytest.fixture(scope="module")
def fuzz_server():
    """Two versions of the trained MNIST model, labelled; requests up to 1 MiB."""
    root = Path(tempfile.mkdtemp(prefix="serving-fuzz-"))
    first, second = exported_versions()
    push(first, root / MODEL_NAME, STABLE)
    push(second, root / MODEL_NAME, CANARY)
    server = ServerProcess(
        root,
        "--model-base-path", str(root / MODEL_NAME),
        "--version-policy", "all",
        "--label", f"stable={STABLE}",
        "--label", f"canary={CANARY}",
        "--max-request-bytes", str(MAX_REQUEST_BYTES),
    )  # fmt: skip
    try:
        server.wait_serving([STABLE, CANARY])
        size = _proc_status(server.process.pid, "VmSize")
        limit = size + ADDRESS_SPACE_HEADROOM
        resource.prlimit(server.process.pid, resource.RLIMIT_AS, (limit, limit))
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _proc_status(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` size field (VmHWM, VmSize...) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def session():
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def channel(fuzz_server):
    with grpc.insecure_channel(fuzz_server.grpc_target) as channel:
        yield channel


# --- REST: schemathesis from the OpenAPI description -------------------------------------------

SCHEMA = schemathesis.openapi.from_path(str(SPEC_RESOURCE))
SCHEMA_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@SCHEMA.parametrize()
@settings(
    max_examples=REST_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not LONG_RUN,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
def test_rest_api_conforms_to_its_description(case, fuzz_server, session):
    """Generated requests per operation: never a 5xx (a 5xx fails the test at once and
    hypothesis shrinks it); a status, content type, header or body the description does
    not declare is recorded with its shortest request and reported at the end, so the
    fuzzing of the operation goes on."""
    response = case.call(base_url=fuzz_server.url, session=session, timeout=CALL_TIMEOUT)
    label = case.operation.label
    TALLY.sent("REST", label, str(response.status_code))
    curl = f"{label}: {case.as_curl_command()}"
    # schemathesis's response: header names in lower case, each with a list of values.
    content_type = (response.headers.get("content-type") or [""])[0].split(";")[0]
    answer = f"{response.status_code} {content_type}"
    if response.status_code >= 500:
        TALLY.server_errors["REST"] += 1
        TALLY.finding("REST", f"{answer} {response.text[:200]}", curl)
    try:
        case.validate_response(response, checks=SCHEMA_CHECKS)
    except (AssertionError, FailureGroup) as error:
        if response.status_code >= 500:
            raise
        for failure in getattr(error, "exceptions", [error]):
            title = getattr(failure, "title", type(failure).__name__)
            TALLY.finding("REST", f"{title} ({answer} {response.text[:80]!r})", curl)


# --- REST: hand-written hostile requests -------------------------------------------------------

POST_OPERATIONS = sorted(
    operation_id for operation_id, (method, _, _) in operations().items() if method == "POST"
)
PATH_VALUES = {"model": MODEL_NAME, "version": str(STABLE), "label": "canary"}
UTF8_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


def post_raw(server: ServerProcess, session, operation_id: str, body: bytes) -> requests.Response:
    """POST raw bytes to an operation; the answer is checked against what it declares."""
    _, path, _ = operations()[operation_id]
    response = send(
        server,
        session,
        operation_id,
        body,
        "POST",
        server.url + fill_path(path, PATH_VALUES),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    _judge(operation_id, response, body)
    return response


def send(
    server: ServerProcess, session, operation_id: str, shown: Any, method: str, url: str, **kwargs
) -> requests.Response:
    """One HTTP request; no answer in time, or a server that died, fails with the request."""
    try:
        return session.request(method, url, timeout=CALL_TIMEOUT, **kwargs)
    except requests.RequestException as error:
        alive = server.process.poll() is None
        what = f"no answer ({type(error).__name__}{'' if alive else ', the server died'})"
        TALLY.finding("REST", what, f"{operation_id}: {shown!r}"[:2000])
        raise AssertionError(f"{what} to {operation_id}: {shown!r}"[:3000]) from error


def _judge(operation_id: str, response: requests.Response, request: Any) -> None:
    """Record the answer; a 5xx or an answer the operation does not declare fails
    (hypothesis then shrinks the request), and is kept as a finding."""
    TALLY.sent("REST", f"hostile {operation_id}", str(response.status_code))
    shown = f"{operation_id}: {request!r}"[:2000]
    content_type = response.headers.get("Content-Type", "").split(";")[0]
    if response.status_code >= 500:
        TALLY.server_errors["REST"] += 1
        TALLY.finding("REST", f"{response.status_code} {response.text[:200]}", shown)
        raise AssertionError(f"{response.status_code} {response.text[:300]} for {shown}")
    try:
        check_response(operation_id, response)
    except AssertionError as error:
        what = f"undeclared answer: {response.status_code} {content_type} {response.text[:80]!r}"
        TALLY.finding("REST", what, shown)
        raise AssertionError(f"{error}\nfor {shown}") from None


@FUZZ_SETTINGS
@given(
    operation_id=st.sampled_from(POST_OPERATIONS),
    body=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            bytes.__add__,
            st.sampled_from(
                [
                    b'{"instances": ',
                    b'{"examples": [',
                    b'{"inputs": {"images": ',
                    b'{"signature_name": "',
                ]
            ),
            st.binary(max_size=256),
        ),
    ),
)
def test_rest_random_bytes(fuzz_server, session, operation_id, body):
    """Random bytes, alone or after the start of a valid body."""
    post_raw(fuzz_server, session, operation_id, body)


@settings(FUZZ_SETTINGS, max_examples=max(HOSTILE_EXAMPLES // 4, 10))
@given(
    operation_id=st.sampled_from(POST_OPERATIONS),
    size=st.integers(MAX_REQUEST_BYTES - 64, MAX_REQUEST_BYTES + 64)
    | st.sampled_from([MAX_REQUEST_BYTES // 2, 4 * MAX_REQUEST_BYTES]),
    chunked=st.booleans(),
)
def test_rest_bodies_around_the_size_limit(fuzz_server, session, operation_id, size, chunked):
    """Bodies of about --max-request-bytes, with a Content-Length or chunked (no length
    known in advance): over the limit is 413 with the JSON error body."""
    _, path, _ = operations()[operation_id]
    head, tail = b'{"instances": [0', b"]}"
    body = head + b",0" * ((size - len(head) - len(tail)) // 2) + tail
    data = (body[i : i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    shown = f"{len(body)} bytes{' chunked' if chunked else ''}"
    url = fuzz_server.url + fill_path(path, PATH_VALUES)
    response = send(fuzz_server, session, operation_id, shown, "POST", url, data=data)
    _judge(operation_id, response, shown)
    if len(body) > MAX_REQUEST_BYTES:
        assert response.status_code == 413, (len(body), response.text[:200])


# Invalid UTF-8: continuation bytes alone, overlong forms, UTF-16 surrogates, 0xff.
NOT_UTF8 = st.sampled_from(
    [b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xff", b"\xfe\xff", b"\xf8\x88\x80\x80\x80", b"\xc3"]
)


@FUZZ_SETTINGS
@given(
    operation_id=st.sampled_from(POST_OPERATIONS),
    template=st.sampled_from(
        [
            b'{"instances": ["@"]}',
            b'{"instances": [{"b64": "@"}]}',
            b'{"signature_name": "@", "instances": [1]}',
            b'{"@": 1, "instances": [1]}',
            b'{"examples": [{"image": "@"}]}',
            b'{"examples": [{"@": 1}], "context": {"image": ["@"]}}',
            b"@",
        ]
    ),
    bad=NOT_UTF8,
    text=st.binary(max_size=16),
)
def test_rest_bodies_that_are_not_utf8(fuzz_server, session, operation_id, template, bad, text):
    """Invalid UTF-8 in strings, b64 values, keys and signature names."""
    post_raw(fuzz_server, session, operation_id, template.replace(b"@", text + bad + text))


NEST_LEAVES = [b"0", b'"a"', b'{"b64": "AA=="}', b"1e308", b"null", b"true", b"{}", b"[]"]


def _nested(depth: int, kind: str, leaf: bytes) -> bytes:
    """``depth`` levels of lists, objects or both around ``leaf``, built as text (the
    JSON encoder would recurse)."""
    opens = {"list": b"[", "object": b'{"a":', "mixed": None}[kind]
    closes = {"list": b"]", "object": b"}"}
    if opens is not None:
        return opens * depth + leaf + closes[kind] * depth
    half = depth // 2
    return b'{"a":[' * half + leaf + b"]}" * half


@FUZZ_SETTINGS
@given(
    operation_id=st.sampled_from(POST_OPERATIONS),
    depth=st.one_of(
        st.integers(1, 2500), st.sampled_from([31, 32, 33, 64, 512, 1000, 1023, 1024, 1025])
    ),
    kind=st.sampled_from(["list", "object", "mixed"]),
    leaf=st.sampled_from(NEST_LEAVES),
    where=st.sampled_from(
        [
            b'{"instances": @}',
            b'{"signature_name": "predict_pixels", "instances": [@]}',
            b'{"signature_name": "predict_images", "inputs": @}',
            b'{"inputs": {"examples": @}}',
            b'{"signature_name": "classify", "examples": [{"image": @}]}',
            b'{"examples": [{}], "context": @}',
            b'{"signature_name": @}',
            b"@",
        ]
    ),
)
def test_rest_deep_nesting(fuzz_server, session, operation_id, depth, kind, leaf, where):
    """Lists and objects nested up to 2,500 deep where tensors, features, the context or
    the signature name go (orjson parses up to 1,024 levels)."""
    post_raw(fuzz_server, session, operation_id, where.replace(b"@", _nested(depth, kind, leaf)))


HUGE_NUMBERS = st.one_of(
    st.sampled_from(
        [
            "1e400",
            "-1e400",
            "1e-400",
            "NaN",
            "Infinity",
            "-Infinity",
            "-0",
            "-0.0",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "4294967296",
            "256",
            "-1",
            "255.5",
            "3.4028235e38",
            "3.5e38",
            "1e2147483648",
            "1" * 5000,
            "0." + "0" * 4000 + "1",
            "1" + "0" * 400 + ".0",
        ]
    ),  # fmt: skip
    st.integers(-(2**200), 2**200).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


@FUZZ_SETTINGS
@given(
    operation_id=st.sampled_from(POST_OPERATIONS),
    number=HUGE_NUMBERS,
    where=st.sampled_from(
        [
            '{"signature_name": "predict_pixels", "instances": [[@' + ", 0" * 783 + "]]}",
            '{"signature_name": "predict_pixels_uint8", "inputs": [[@' + ", 0" * 783 + "]]}",
            '{"signature_name": "predict_images", "instances": [[@' + ", 0" * 783 + "]]}",
            '{"signature_name": "predict_images", "instances": [@]}',
            '{"instances": [@]}',
            '{"signature_name": "classify", "examples": [{"image": @}]}',
            '{"signature_name": "classify", "examples": [{"image": [@, 1]}]}',
            '{"examples": [{"x": [1.5, @]}], "context": {"y": @}}',
            '{"signature_name": @, "instances": [1]}',
        ]
    ),
)
def test_rest_huge_numbers(fuzz_server, session, operation_id, number, where):
    """Numbers beyond float32, int64 and uint64, non-JSON tokens, thousands of digits,
    as pixels of every signature, features and signature names."""
    post_raw(fuzz_server, session, operation_id, where.replace("@", number).encode())


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | UTF8_TEXT
    | st.fixed_dictionaries({"b64": st.one_of(UTF8_TEXT, st.integers(), st.none())}),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from(INPUT_KEYS + ["image", "b64"]) | UTF8_TEXT, children, max_size=4
        )
    ),
    max_leaves=40,
)


@FUZZ_SETTINGS
@given(
    operation_id=st.sampled_from(POST_OPERATIONS),
    body=st.fixed_dictionaries(
        {},
        optional={
            "signature_name": st.sampled_from(SIGNATURES) | JSON_VALUES,
            "instances": JSON_VALUES,
            "inputs": JSON_VALUES,
            "examples": JSON_VALUES
            | st.lists(st.dictionaries(st.sampled_from(["image", "label", "x"]), JSON_VALUES)),
            "context": JSON_VALUES,
        },
    )
    | JSON_VALUES,
)
def test_rest_wrong_types(fuzz_server, session, operation_id, body):
    """Any JSON value, of any type, as the body or any of its fields."""
    post_raw(fuzz_server, session, operation_id, json.dumps(body).encode())


URL_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["\n", "\r\n", "\x00", " ", ".", "..", "%", "%2F", "a/b", "a:b", "?", "#", "é"]
    ),
)


@FUZZ_SETTINGS
@given(
    operation_id=st.sampled_from(sorted(operations())),
    model=URL_TEXT,
    label=URL_TEXT,
    version=st.integers(-5, 2**70).map(str) | URL_TEXT,
    encode=st.booleans(),
)
def test_rest_hostile_urls(fuzz_server, session, operation_id, model, label, version, encode):
    """Random model names, labels and versions in every route: percent-encoded, or
    raw where the URL allows it."""
    method, path, _ = operations()[operation_id]
    if "{" not in path:
        model = label = version = ""

    def segment(text: str) -> str:
        if encode:
            return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")
        return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="/:.%")

    url = fuzz_server.url + fill_path(
        path, {"model": segment(model), "label": segment(label), "version": segment(version)}
    )
    body = {"instances": [{"b64": "AA=="}], "examples": [{"x": 1}]} if method == "POST" else None
    shown = f"{method} {url}"
    response = send(fuzz_server, session, operation_id, shown, method, url, json=body)
    _judge(operation_id, response, shown)


# --- gRPC --------------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
PROTO_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)


def mostly(usual: st.SearchStrategy, other: st.SearchStrategy, tenths: int = 8):
    """``usual`` in ``tenths`` of ten draws, else ``other``: random requests should
    mostly name the served model, a real signature and input, or they only test the
    lookup."""
    return st.integers(0, 9).flatmap(lambda i: usual if i < tenths else other)


MODEL_NAMES = mostly(
    st.just(MODEL_NAME),
    st.sampled_from(["", "MNIST", "fashion_mnist", "mnist\x00", "mnist "]) | PROTO_TEXT,
)


@st.composite
def model_specs(draw) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(
        name=draw(MODEL_NAMES),
        signature_name=draw(mostly(st.sampled_from(SIGNATURES), PROTO_TEXT)),
    )
    choice = draw(st.sampled_from(["latest", "latest", "version", "label"]))
    if choice == "version":
        spec.version.value = draw(mostly(st.sampled_from([STABLE, CANARY]), INT64, 7))
    elif choice == "label":
        spec.version_label = draw(
            mostly(
                st.sampled_from(["stable", "canary"]), st.sampled_from(["", "nope"]) | PROTO_TEXT, 7
            )
        )
    return spec


DIM_SIZES = st.one_of(
    st.integers(0, 4),
    st.sampled_from([1, 10, 28, 784]),
    st.integers(-3, -1),
    st.sampled_from([2**20, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1, -(2**63)]),
    INT64,
)
FLOAT32 = st.floats(width=32)
INT32 = st.integers(-(2**31), 2**31 - 1)
VALUE_FIELDS = {
    "float_val": st.lists(FLOAT32, max_size=20),
    "double_val": st.lists(st.floats(), max_size=20),
    "int_val": st.lists(INT32, max_size=20),
    "int64_val": st.lists(INT64, max_size=20),
    "uint32_val": st.lists(st.integers(0, 2**32 - 1), max_size=20),
    "uint64_val": st.lists(st.integers(0, 2**64 - 1), max_size=20),
    "bool_val": st.lists(st.booleans(), max_size=20),
    "half_val": st.lists(INT32, max_size=20),
    "scomplex_val": st.lists(FLOAT32, max_size=20),
    "string_val": st.lists(st.binary(max_size=64), max_size=8),
}


@st.composite
def random_tensors(draw) -> tensor_pb2.TensorProto:
    """Any TensorProto: any dtype number, any shape, any value fields or packed bytes."""
    dtype = draw(st.sampled_from(sorted(types_pb2.DataType.values())) | st.integers(-3, 400))
    proto = tensor_pb2.TensorProto(dtype=dtype)
    if draw(st.integers(0, 9)) == 0:
        proto.tensor_shape.unknown_rank = True
    for size in draw(st.lists(DIM_SIZES, max_size=6)):
        proto.tensor_shape.dim.add(size=size)
    for field in draw(st.sets(st.sampled_from(sorted(VALUE_FIELDS)), max_size=3)):
        getattr(proto, field).extend(draw(VALUE_FIELDS[field]))
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=4096))
    proto.version_number = draw(st.sampled_from([0, 0, 1, -1]))
    return proto


PIXEL_DTYPES = {
    types_pb2.DT_FLOAT: 4,
    types_pb2.DT_UINT8: 1,
    types_pb2.DT_DOUBLE: 8,
    types_pb2.DT_INT32: 4,
    types_pb2.DT_INT64: 8,
}


@st.composite
def plausible_tensors(draw) -> tensor_pb2.TensorProto:
    """Tensors close to what the signatures take: pixels [n, 784] or [n, 28, 28] (packed
    random bytes, a value list of the right length or not), or serialized Examples."""
    n = draw(st.integers(0, 6) | st.sampled_from([2**14, 2**20, 2**31]))
    if draw(st.integers(0, 3)) == 0:
        examples = draw(st.lists(examples_strategy(), min_size=0, max_size=4))
        proto = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[e.SerializeToString() for e in examples]
        )
        proto.tensor_shape.dim.add(size=draw(st.sampled_from([len(examples), n])))
        return proto
    dtype = draw(st.sampled_from(sorted(PIXEL_DTYPES)))
    proto = tensor_pb2.TensorProto(dtype=dtype)
    shape = draw(st.sampled_from([[n, 784], [n, 28, 28], [n, 783], [784], [n, 28, 28, 1]]))
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    elements = 1
    for size in shape:
        elements *= size
    how = draw(st.sampled_from(["images", "packed", "values", "one value", "none"]))
    if how == "images" and 0 < n <= 8:
        # Real images, so that some requests get through to the model.
        images = mnist_images()[0][:n].astype(tf.dtypes.as_dtype(dtype).as_numpy_dtype)
        scale = draw(st.sampled_from([1.0, 1 / 255]))
        proto.tensor_content = (images * scale).astype(images.dtype).tobytes()
        del proto.tensor_shape.dim[:]
        for size in shape if shape[0] == n else [n, 784]:
            proto.tensor_shape.dim.add(size=size)
    elif how == "packed" and elements * PIXEL_DTYPES[dtype] <= 1 << 16:
        proto.tensor_content = draw(
            st.binary(min_size=elements * PIXEL_DTYPES[dtype], max_size=elements * 8)
        )
    elif how == "values" and elements <= 1 << 14:
        value = draw(st.sampled_from([0.0, 1.0, 0.5, 255.0, 256.0, -1.0, float("nan")]))
        field = {types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT64: "int64_val"}.get(
            dtype, "float_val" if dtype == types_pb2.DT_FLOAT else "int_val"
        )
        count = draw(st.sampled_from([elements, max(elements - 1, 0), elements + 1]))
        cast = float if field in ("float_val", "double_val") else _to_int
        getattr(proto, field).extend([cast(value)] * count)
    elif how == "one value":
        proto.float_val.append(0.0)
    return proto


def _to_int(value: float) -> int:
    return 0 if value != value else int(value)  # NaN -> 0


IMAGE_BYTES = st.sampled_from([image.tobytes() for image in mnist_images()[0][:4]])
BYTES_VALUES = st.one_of(
    st.binary(max_size=1000),
    IMAGE_BYTES,
    # Up to 8 MiB, beyond the server's 1 MiB limit.
    st.builds(bytes.__mul__, st.binary(min_size=1, max_size=8), st.integers(1, 1 << 20)),
)


@st.composite
def features(draw) -> tf.train.Feature:
    kind = draw(st.sampled_from(["bytes", "float", "int64", "empty"]))
    if kind == "bytes":
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(value=draw(st.lists(BYTES_VALUES, max_size=3)))
        )
    if kind == "float":
        return tf.train.Feature(
            float_list=tf.train.FloatList(value=draw(st.lists(FLOAT32, max_size=800)))
        )
    if kind == "int64":
        return tf.train.Feature(
            int64_list=tf.train.Int64List(value=draw(st.lists(INT64, max_size=800)))
        )
    return tf.train.Feature()


def examples_strategy():
    return st.builds(
        lambda feature_map: tf.train.Example(features=tf.train.Features(feature=feature_map)),
        st.dictionaries(
            st.sampled_from(["image", "label", "x", ""]) | PROTO_TEXT, features(), max_size=4
        ),
    )


VALID_EXAMPLES = st.builds(
    lambda index: tf.train.Example.FromString(serialized_example(mnist_images()[0][index])),
    st.integers(0, 7),
)


@st.composite
def inputs(draw) -> input_pb2.Input:
    kind = draw(st.sampled_from(["example_list", "with_context", "empty"]))
    examples = draw(st.lists(examples_strategy() | VALID_EXAMPLES, max_size=4))
    proto = input_pb2.Input()
    if kind == "example_list":
        proto.example_list.examples.extend(examples)
    elif kind == "with_context":
        proto.example_list_with_context.examples.extend(examples)
        proto.example_list_with_context.context.CopyFrom(draw(examples_strategy()))
    return proto


@st.composite
def predict_requests(draw) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=draw(model_specs()))
    keys = draw(
        st.lists(mostly(st.sampled_from(INPUT_KEYS), PROTO_TEXT, 9), max_size=2, unique=True)
    )
    for key in keys:
        request.inputs[key].CopyFrom(draw(mostly(plausible_tensors(), random_tensors(), 6)))
    if draw(st.integers(0, 2)) == 0:
        request.output_filter.extend(
            draw(st.lists(mostly(st.sampled_from(OUTPUT_KEYS), PROTO_TEXT), max_size=4))
        )
    return request


def call(server: ServerProcess, channel, service: str, method: str, request: Any) -> None:
    """One RPC with a deadline; its status code recorded; a code the server must never
    answer, or UNAVAILABLE from a server that died, fails the test with the request
    (which hypothesis then shrinks)."""
    stub_class = {
        "PredictionService": prediction_service_pb2_grpc.PredictionServiceStub,
        "ModelService": model_service_pb2_grpc.ModelServiceStub,
    }[service]
    try:
        getattr(stub_class(channel), method)(request, timeout=CALL_TIMEOUT)
        code = grpc.StatusCode.OK
        details = ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
    TALLY.sent("gRPC", method, code.name)
    if code == grpc.StatusCode.UNAVAILABLE and server.process.poll() is not None:
        shown = f"{method}({type(request).__name__}: {str(request)[:1500]})"
        TALLY.finding("gRPC", "the server died", shown)
        raise AssertionError(f"the server died on {shown}")
    if code in BAD_GRPC_CODES:
        if code != grpc.StatusCode.DEADLINE_EXCEEDED:
            TALLY.server_errors["gRPC"] += 1
        shown = f"{method}({type(request).__name__}: {str(request)[:1500]})"
        TALLY.finding("gRPC", f"{code.name} from {method}", shown)
        raise AssertionError(f"{method} answered {code.name}: {details}\n{shown}")


GRPC_SETTINGS = settings(FUZZ_SETTINGS, max_examples=GRPC_EXAMPLES)
GRPC_SMALL_SETTINGS = settings(FUZZ_SETTINGS, max_examples=max(GRPC_EXAMPLES // 3, 10))


@GRPC_SETTINGS
@given(request=predict_requests())
def test_grpc_predict(fuzz_server, channel, request):
    """Random and nearly valid TensorProtos, model specs and output filters."""
    call(fuzz_server, channel, "PredictionService", "Predict", request)


@GRPC_SETTINGS
@given(
    request=st.builds(
        classification_pb2.ClassificationRequest, model_spec=model_specs(), input=inputs()
    )
)
def test_grpc_classify(fuzz_server, channel, request):
    """Random tf.Examples (with or without a context), some valid, some huge."""
    call(fuzz_server, channel, "PredictionService", "Classify", request)


@GRPC_SMALL_SETTINGS
@given(
    request=st.builds(regression_pb2.RegressionRequest, model_spec=model_specs(), input=inputs())
)
def test_grpc_regress(fuzz_server, channel, request):
    call(fuzz_server, channel, "PredictionService", "Regress", request)


@GRPC_SMALL_SETTINGS
@given(
    tasks=st.lists(
        st.builds(
            inference_pb2.InferenceTask,
            model_spec=model_specs(),
            method_name=st.sampled_from(
                [
                    "tensorflow/serving/classify",
                    "tensorflow/serving/regress",
                    "tensorflow/serving/predict",
                    "",
                ]
            )
            | PROTO_TEXT,
        ),
        max_size=3,
    ),
    model_input=inputs(),
)
def test_grpc_multi_inference(fuzz_server, channel, tasks, model_input):
    request = inference_pb2.MultiInferenceRequest(tasks=tasks, input=model_input)
    call(fuzz_server, channel, "PredictionService", "MultiInference", request)


@GRPC_SMALL_SETTINGS
@given(
    spec=model_specs(),
    fields=st.lists(st.sampled_from(["signature_def", ""]) | PROTO_TEXT, max_size=3),
)
def test_grpc_metadata_and_status(fuzz_server, channel, spec, fields):
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=fields)
    call(fuzz_server, channel, "PredictionService", "GetModelMetadata", request)
    status = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
    call(fuzz_server, channel, "ModelService", "GetModelStatus", status)


# --- after the fuzzing --------------------------------------------------------------------------


def test_server_survived_within_memory_bound_and_report(fuzz_server, channel, capsys):
    """After everything above: the server process is alive and answers a valid REST
    and gRPC request; its peak resident memory stayed under PEAK_RSS_BOUND; the counts
    are printed; no finding is left."""
    assert fuzz_server.process.poll() is None, f"server died:\n{fuzz_server.log()}"
    image = mnist_images()[0][0]
    example = serialized_example(image)
    response = requests.post(
        f"{fuzz_server.url}/v1/models/{MODEL_NAME}:predict",
        json={"instances": [{"b64": base64.b64encode(example).decode()}]},
        timeout=CALL_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example]))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stub.Predict(request, timeout=CALL_TIMEOUT)
    peak = _proc_status(fuzz_server.process.pid, "VmHWM")
    metrics = requests.get(f"{fuzz_server.url}/monitoring/prometheus/metrics", timeout=30)
    with capsys.disabled():
        print("\n" + report(peak, len(metrics.text.splitlines())))
    assert peak < PEAK_RSS_BOUND, f"server peak RSS {peak >> 20} MiB"
    assert not TALLY.findings, "\n".join(
        f"{api}: {what}\n    {request}" for (api, what), request in sorted(TALLY.findings.items())
    )


def report(peak: int, metric_lines: int) -> str:
    lines = [
        f"fuzz report ({FUZZ_EXAMPLES_ENV}={LONG_RUN or 'unset'}; per operation "
        f"{REST_EXAMPLES} schemathesis, {HOSTILE_EXAMPLES} hostile REST, "
        f"{GRPC_EXAMPLES} gRPC examples)"
    ]
    for api in ("REST", "gRPC"):
        sent = {method: n for (a, method), n in sorted(TALLY.requests.items()) if a == api}
        answers = {code: n for (a, code), n in sorted(TALLY.answers.items()) if a == api}
        lines.append(f"  {api}: {sum(sent.values())} requests; answers {answers}")
        lines += [f"    {n:6d}  {method}" for method, n in sent.items()]
    lines.append(
        f"  5xx answers (REST): {TALLY.server_errors['REST']}; "
        f"INTERNAL/UNKNOWN/DATA_LOSS answers (gRPC): {TALLY.server_errors['gRPC']}"
    )
    lines.append(
        f"  server peak RSS (VmHWM): {peak / 2**20:.0f} MiB (bound {PEAK_RSS_BOUND >> 20} MiB); "
        f"metrics page {metric_lines} lines"
    )
    lines.append(f"  findings: {len(TALLY.findings)}")
    lines += [f"    {api}: {what}" for api, what in sorted(TALLY.findings)]
    return "\n".join(lines)
