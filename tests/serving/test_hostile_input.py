"""Hostile input, REST and gRPC: every case is refused as the client's mistake (400 /
INVALID_ARGUMENT), never a 500 or a wrong answer, and the server answers a valid
request right after it. Numbers that do not fit the input's dtype, bodies that are
not UTF-8, JSON nested 100,000 deep, a gzip bomb and a body that is not the gzip it
claims, a version number of 5,000 digits, TensorProtos whose shape promises far more
values than they carry; an error inside the model is
a 500 / INTERNAL with a fixed text (the traceback, which names server paths, goes to
the log only); and a thousand unknown model names do not grow the metrics page.

The model is built here: a tiny TF2 SavedModel with a float, an int64 and a string
signature, whose float signature fails inside the graph (NOT_FOUND reading a server
file) when any input is negative. It runs on a server of its own.
"""

from __future__ import annotations

import base64
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.errors import INTERNAL_ERROR_MESSAGE, ServingError
from serving.metrics import UNKNOWN_MODEL
from serving.rest_format import classify_examples
from tests.serving_fixture import ServerProcess

MODEL = "tiny"
PIXELS = 784
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def build_tiny_model(path: Path, missing_file: Path) -> None:
    """``serving_default``: ``x`` float32 [N, 784] -> ``total`` [N], the row sums, failing
    with NOT_FOUND (reading ``missing_file``) when any x < 0; ``echo_int64``: ``n`` int64
    [N, M] -> ``n``; ``strings``: ``s`` string [N] -> ``length`` int32 [N]."""

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, PIXELS], tf.float32)])
        def total(self, x):
            def fail():
                return tf.strings.to_number(tf.io.read_file(str(missing_file)))

            offset = tf.cond(tf.reduce_any(x < 0), fail, lambda: tf.constant(0.0))
            return {"total": tf.reduce_sum(x, axis=1) + offset}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)])
        def echo(self, n):
            return {"n": tf.identity(n)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def lengths(self, s):
            return {"length": tf.strings.length(s)}

    module = Tiny()
    signatures = {
        "serving_default": module.total,
        "echo_int64": module.echo,
        "strings": module.lengths,
    }
    tf.saved_model.save(module, str(path), signatures=signatures)


@pytest.fixture(scope="module")
def root():
    path = Path(tempfile.mkdtemp(prefix="serving-hostile-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def missing_file(root) -> Path:
    """A server-side path the model reads and fails on; no client may ever see it."""
    return root / "server-secret" / "no-such-file"


@pytest.fixture(scope="module")
def server(root, missing_file):
    build_tiny_model(root / MODEL / "1", missing_file)
    process = ServerProcess(root, "--model-base-path", str(root / MODEL), "--model-name", MODEL)
    try:
        process.wait_serving([1], model=MODEL)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def post(server: ServerProcess, path: str, body) -> requests.Response:
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    return requests.post(f"{server.url}/v1/models/{path}", timeout=60, **kwargs)


def assert_still_serving(server: ServerProcess) -> None:
    """A valid REST request after the hostile one gets the right answer."""
    response = post(server, f"{MODEL}:predict", {"instances": [[1.0] * PIXELS]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [float(PIXELS)]}


def deep(depth: int, leaf: bytes) -> bytes:
    """JSON lists nested ``depth`` deep around ``leaf`` (as bytes: Python's and orjson's
    encoders stop far earlier)."""
    return b"[" * depth + leaf + b"]" * depth


# --- REST: numbers that do not fit ----------------------------------------------------

ECHO = f"{MODEL}:predict"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"signature_name": "echo_int64", "instances": [[2**63]]},
            "values must be in -9223372036854775808..9223372036854775807 for a DT_INT64 "
            "tensor, got min 9223372036854775808",
        ),
        (
            {"signature_name": "echo_int64", "instances": [[2**64 - 1, -1]]},
            "is not an exact integer here",
        ),
        # Beyond 64 bits the JSON parser gives a float; it must not be rounded into range.
        (
            b'{"signature_name": "echo_int64", "instances": [[-9223372036854775809]]}',
            "is not an exact integer here",
        ),
        (
            b'{"signature_name": "echo_int64", "instances": [[18446744073709551616]]}',
            "is not an exact integer here",
        ),
        # A float among integers makes every number a float64: 2**53 + 1 would round.
        (
            {"signature_name": "echo_int64", "instances": [[1.0, 2**53 + 1]]},
            "is not an exact integer here",
        ),
        (
            {"signature_name": "echo_int64", "instances": [[0.5]]},
            "JSON Value: 0.5 Type: Number is not of expected type: int64",
        ),
        ({"instances": [[1e39] * PIXELS]}, "values must be within -3.40282e+38..3.40282e+38"),
        (b'{"instances": [[1e400]]}', "JSON Parse error: number is infinity"),
        ({"instances": [[True] * PIXELS]}, "is not of expected type: float"),
    ],
    ids=[
        "int64-max-plus-1",
        "uint64-max-with-negative",
        "below-int64-min",
        "beyond-64-bits",
        "float-with-big-int",
        "fraction-for-int64",
        "float32-overflow",
        "double-overflow",
        "bool-for-float",
    ],
)
def test_number_that_does_not_fit_is_400(server, body, error):
    response = post(server, ECHO, body)
    assert response.status_code == 400, response.text
    assert error in response.json()["error"]
    assert_still_serving(server)


def test_int64_extremes_come_back_exactly(server):
    """What does fit is passed on unchanged: no rounding through float64."""
    values = [INT64_MAX, INT64_MIN, 2**53 + 1, -(2**53) - 1, 0]
    response = post(server, ECHO, {"signature_name": "echo_int64", "instances": [values]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [values]}


def test_classify_features_that_do_not_fit_are_400():
    """The classify/regress JSON (features of tf.Examples): an integer beyond int64 or a
    float beyond float32 is refused (TF Serving's words for the first)."""
    for value, error in [
        (2**63, "has uint64_t element 9223372036854775808. Only int64_t is supported."),
        (1e39, "is out of range for a float feature"),
    ]:
        with pytest.raises(ServingError) as refused:
            classify_examples({"examples": [{"x": [value]}]})
        assert refused.value.http_status == 400
        assert error in refused.value.message


# --- REST: bytes that are not UTF-8, nesting, huge numbers in the URL ------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"signature_name": "strings", "instances": ["\xff\xfe"]}',
        b"\xff" + b'{"instances": [[1]]}',
        b'{"signature_name": "strings", "instances": ["\\ud800"]}',
        b'{"signature_name": "strings", "instances": ["a\xc3"]}',
    ],
    ids=["in-a-string", "before-the-json", "lone-surrogate-escape", "truncated-sequence"],
)
def test_non_utf8_is_400(server, body):
    response = post(server, ECHO, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("JSON Parse error: ")
    assert_still_serving(server)


def test_binary_strings_travel_as_b64(server):
    """The way to send bytes that are not UTF-8: {"b64": ...}."""
    raw = b"\xff\xfe\x00"
    body = {"signature_name": "strings", "instances": [{"b64": base64.b64encode(raw).decode()}]}
    response = post(server, ECHO, body)
    assert (response.status_code, response.json()) == (200, {"predictions": [3]})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[" * 100_000, "JSON Parse error: depth limit exceeded"),
        (b'{"instances": ' + b"[" * 100_000, "JSON Parse error: depth limit exceeded"),
        # Deep, but within the parser's limit of 1024: refused before anything recurses.
        (b'{"instances": ' + deep(1000, b"0.0") + b"}", "lists nested deeper than 32 levels"),
        (
            b'{"signature_name": "strings", "instances": ["a", ' + deep(1000, b'"a"') + b"]}",
            "lists nested deeper than 32 levels",
        ),
        (
            b'{"instances": [[0.0], ' + deep(1000, b"0.0") + b"]}",
            "ragged or mixed nested lists",
        ),
        (
            b'{"signature_name": ' + deep(1000, b'"x"') + b"}",
            "'signature_name' key must be a string",
        ),
    ],
    ids=["100k-brackets", "100k-in-instances", "1000-deep", "1000-deep-strings-ragged",
         "1000-deep-ragged", "1000-deep-signature-name"],
)  # fmt: skip
def test_deep_nesting_is_400(server, body, error):
    response = post(server, ECHO, body)
    assert response.status_code == 400, response.text
    assert error in response.json()["error"]
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        # 200 MiB of JSON in 200 kB: the size limit counts what is decompressed.
        (
            gzip.compress(b'{"instances": [' + b" " * (200 * 1024 * 1024) + b"]}"),
            413,
            "request body is larger than the limit of 4194304 bytes (--max-request-bytes)",
        ),
        (b"\x1f\x8bnot really gzip", 400, "the request body cannot be read: "),
    ],
    ids=["gzip-bomb", "not-gzip"],
)
def test_gzip_body_that_is_too_big_or_broken(server, body, status, error):
    response = requests.post(
        f"{server.url}/v1/models/{ECHO}",
        data=body,
        headers={"Content-Encoding": "gzip"},
        timeout=60,
    )
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(error)
    assert_still_serving(server)


def test_version_of_5000_digits_is_400(server):
    digits = "9" * 5000
    for method, path in [
        ("GET", f"/v1/models/{MODEL}/versions/{digits}"),
        ("POST", f"/v1/models/{MODEL}/versions/{digits}:predict"),
    ]:
        response = requests.request(method, server.url + path, json={}, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json() == {"error": f"Failed to convert version: {digits} to numeric."}
    assert_still_serving(server)


# --- internal errors: 500 / INTERNAL with a fixed text ----------------------------------


def test_error_inside_the_model_is_500_without_details(server, missing_file):
    """The model fails with NOT_FOUND naming a server file: the client gets the fixed
    text only; the log has the traceback with the details."""
    response = post(server, f"{MODEL}:predict", {"instances": [[-1.0] * PIXELS]})
    assert response.status_code == 500
    assert response.json() == {"error": INTERNAL_ERROR_MESSAGE}
    assert "server-secret" not in response.text
    deadline = time.monotonic() + 10
    while "Traceback" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    assert "unexpected error on POST /v1/models/tiny:predict" in log
    assert "Traceback" in log
    assert str(missing_file) in log
    assert_still_serving(server)


def test_grpc_error_inside_the_model_is_internal_without_details(server, stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.full((1, PIXELS), -1.0, np.float32)))
    with pytest.raises(grpc.RpcError) as failed:
        stub.Predict(request, timeout=60)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert failed.value.details() == INTERNAL_ERROR_MESSAGE
    assert_grpc_still_serving(stub)


# --- gRPC: TensorProtos that do not hold what their shape says ---------------------------


def tensor(dtype: int, shape: list[int], unknown_rank: bool = False, **values):
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = unknown_rank
    return proto


def assert_grpc_still_serving(stub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((2, PIXELS), np.float32)))
    response = stub.Predict(request, timeout=60)
    assert tf.make_ndarray(response.outputs["total"]).tolist() == [PIXELS, PIXELS]


@pytest.mark.parametrize(
    ("key", "proto", "detail"),
    [
        ("x", tensor(types_pb2.DT_FLOAT, [10**9, PIXELS], float_val=[1, 2, 3]),
         "tensor_shape [1000000000, 784] has 784000000000 elements, float_val carries 3 values"),
        ("x", tensor(types_pb2.DT_FLOAT, [10**9, PIXELS]),
         "has 784000000000 elements, float_val carries 0 values"),
        ("x", tensor(types_pb2.DT_FLOAT, [2**40, PIXELS], float_val=[1.0]),
         "float_val carries 1 values"),
        ("x", tensor(types_pb2.DT_FLOAT, [10**9, PIXELS], tensor_content=b"\0" * 12),
         "tensor_content holds 12 bytes, tensor_shape [1000000000, 784] of DT_FLOAT needs "
         "3136000000000"),
        ("x", tensor(types_pb2.DT_FLOAT, [1, PIXELS], float_val=[0.0] * (PIXELS + 1)),
         "has 784 elements, float_val carries 785 values"),
        ("x", tensor(types_pb2.DT_FLOAT, [-1, PIXELS], float_val=[0.0]),
         "has a negative dimension"),
        ("x", tensor(types_pb2.DT_FLOAT, [], unknown_rank=True, float_val=[0.0]),
         "unknown rank"),
        ("x", tensor(types_pb2.DT_FLOAT, [1] * 40, float_val=[0.0]), "40 dimensions"),
        ("x", tensor(types_pb2.DT_INVALID, [1], float_val=[0.0]), "dtype DT_INVALID"),
        ("x", tensor(12345, [1]), "dtype 12345 is not supported"),
        ("s", tensor(types_pb2.DT_STRING, [10**12], string_val=[b"a"]),
         "string_val carries 1 values"),
        ("s", tensor(types_pb2.DT_STRING, [1], tensor_content=b"abcd"),
         "values must be in string_val"),
        ("n", tensor(types_pb2.DT_INT64, [10**6, 10**6], int64_val=[INT64_MAX]),
         "int64_val carries 1 values"),
    ],
    ids=["1e9x784-with-3-values", "1e9x784-with-none", "2**40x784-with-1", "content-too-short",
         "too-many-values", "negative-dim", "unknown-rank", "40-dims", "dtype-invalid",
         "dtype-unknown", "strings-1e12", "strings-as-content", "int64-1e12"],
)  # fmt: skip
def test_tensor_proto_promising_more_than_it_carries_is_refused(server, stub, key, proto, detail):
    """INVALID_ARGUMENT with TF Serving's "tensor parsing error: KEY" before anything of
    the promised size is allocated (the answer is quick and the server lives on)."""
    signature = {"x": "serving_default", "n": "echo_int64", "s": "strings"}[key]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(proto)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(f"tensor parsing error: {key}: ")
    assert detail in refused.value.details()
    assert time.monotonic() - started < 10
    assert_grpc_still_serving(stub)


# --- metrics: label values stay bounded ---------------------------------------------------


def _series(server: ServerProcess) -> list[str]:
    page = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).text
    return [line for line in page.splitlines() if line and not line.startswith("#")]


def test_unknown_names_do_not_grow_the_metrics(server, stub):
    """1,000 unknown model names (REST predict and status), 100 unknown signature names,
    100 malformed methods and 100 unknown names over gRPC: a handful of new series at
    most (one per API, method and code under the model label "_unknown"), and no name
    sent appears on the page."""
    with requests.Session() as session:
        session.post(f"{server.url}/v1/models/warm-up-name:predict", json={}, timeout=30)
        session.get(f"{server.url}/v1/models/warm-up-name", timeout=30)
        before = _series(server)
        for index in range(1000):
            name = f"no-such-model-{index}"
            method = session.post if index % 2 else session.get
            suffix = ":predict" if index % 2 else ""
            response = method(f"{server.url}/v1/models/{name}{suffix}", json={}, timeout=30)
            assert response.status_code in (400, 404), response.text
        for index in range(100):
            body = {"signature_name": f"no-such-signature-{index}", "instances": [[0.0]]}
            response = session.post(f"{server.url}/v1/models/{ECHO}", json=body, timeout=30)
            assert response.status_code == 400, response.text
            response = session.post(f"{server.url}/v1/models/{MODEL}:method{index}", timeout=30)
            assert response.status_code == 400, response.text
    for index in range(100):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = f"no-such-grpc-model-{index}"
        with pytest.raises(grpc.RpcError):
            stub.Predict(request, timeout=30)
    after = _series(server)
    text = "\n".join(after)
    assert "no-such-" not in text
    assert "warm-up-name" not in text
    assert f'model="{UNKNOWN_MODEL}"' in text
    # New series: at most the gRPC ones of "_unknown" and the 400s of the known model
    # (requests counter and latency histogram); nothing per name sent.
    assert len(after) - len(before) < 60, sorted(set(after) - set(before))
    assert_still_serving(server)
