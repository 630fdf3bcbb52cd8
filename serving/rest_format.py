"""TF Serving's REST JSON formats, turned into numpy inputs and back.

Predict: the row format (``instances``: a list with one entry per example, each a
value or an object of named inputs) and the columnar format (``inputs``: a value
or an object of named, already batched inputs); responses ``predictions`` (row)
or ``outputs`` (columnar), with one output given bare and several as objects,
the way TF Serving shapes them. Binary strings travel as ``{"b64": ...}``.
Classify: ``examples`` (and optional ``context``) as objects of features, turned
into serialized ``tf.Example``; the response ``results`` holds ``[label, score]``
pairs. Pure functions, no HTTP; every error names the problem and is a 400.

Errors use TF Serving's wording (``tensorflow_serving/util/json_tensor.cc``) where a
client could match on it ("JSON Parse error: ...", "JSON Value: ... Is not object",
"... is not of expected type: float", "Missing 'inputs' or 'instances' key"). A
number that does not fit the input's dtype, a float standing in for an integer it
cannot represent exactly, and lists nested deeper than a tensor can be are refused,
never rounded, wrapped or left to crash the handler.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

import numpy as np
import orjson
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving.errors import ServingError, invalid_argument
from serving.signatures import Signature, TensorInfo

B64_KEY = "b64"
SIGNATURE_KEY = "signature_name"
# TF Serving quotes at most this much of a JSON value in an error message.
_DEBUG_JSON_CHARS = 256
# Dimensions a JSON tensor may have: numpy's limit (TensorFlow's is 254). Deeper
# lists are refused before anything walks them.
MAX_JSON_RANK = 32
# Integers below this magnitude are exact as float64s (what JSON numbers with a
# fraction or exponent, and integers beyond 64 bits, are parsed to); from it on, a
# float may be a neighbour rounded onto it (2**53 + 1 becomes 2**53).
_EXACT_FLOAT_INT = 2**53
_INT64 = np.iinfo(np.int64)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_JSON_WHITESPACE = b" \t\r\n"


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; TF Serving's "JSON Parse error" otherwise.
    Bodies that are not UTF-8, and lists or objects nested more than 1024 deep
    (orjson's limit), are parse errors."""
    if not raw.strip(_JSON_WHITESPACE):
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        message = error.msg
        if "UTF-8" in message:
            message = "the body is not valid UTF-8"
        raise invalid_argument(f"JSON Parse error: {message} at offset: {error.pos}") from None
    if not isinstance(body, dict):
        raise invalid_argument(f"JSON Value: {json_debug(body)} Is not object")
    return body


def signature_name(body: dict[str, Any]) -> str:
    """The request's ``signature_name`` ("" when absent: the default signature)."""
    name = body.get(SIGNATURE_KEY, "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {json_debug(body)} not formatted correctly. "
            f"'{SIGNATURE_KEY}' key must be a string value."
        )
    return name


def json_debug(value: Any, limit: int = _DEBUG_JSON_CHARS) -> str:
    """A JSON value as an error message quotes it: compact, cut after ``limit`` characters."""
    if isinstance(value, bytes):
        text = repr(value)
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:  # orjson.JSONEncodeError: nested deeper than orjson writes
            text = f"<{type(value).__name__} nested too deeply to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value: Any) -> str:
    """TF Serving's name of a JSON value's type, as its errors say it."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(where: str, value: Any, info: TensorInfo) -> ServingError:
    return invalid_argument(
        f"{where}: JSON Value: {_short(value)} Type: {json_type(value)} "
        f"is not of expected type: {tf_type_name(info.dtype)}"
    )


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and B64_KEY in value


def decode_b64(value: dict[str, Any], where: str) -> bytes:
    text = value[B64_KEY]
    if not isinstance(text, str):
        raise invalid_argument(f"{where}: 'b64' value must be a string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise invalid_argument(f"{where}: 'b64' value is not valid base64 ({error})") from None


def _string_leaves(value: Any, where: str) -> Any:
    """Nested lists of strings / b64 objects with every leaf turned into bytes."""
    if isinstance(value, list):
        return [_string_leaves(item, where) for item in value]
    if _is_b64(value):
        return decode_b64(value, where)
    if isinstance(value, str):
        return value.encode()
    raise invalid_argument(
        f"{where}: JSON Value: {_short(value)} Type: {json_type(value)} "
        'is not of expected type: string (strings or {"b64": ...} objects)'
    )


def _short(value: Any) -> str:
    return json_debug(value, 40)


_NOT_FOUND = object()


def _first_non_number(value: Any) -> Any:
    """The first leaf that is not a number (JSON null included), or ``_NOT_FOUND``."""
    if isinstance(value, list):
        for item in value:
            found = _first_non_number(item)
            if found is not _NOT_FOUND:
                return found
        return _NOT_FOUND
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return _NOT_FOUND


def dtype_name(dtype: tf.DType) -> str:
    """TF's own name of a dtype, e.g. DT_FLOAT, as TF Serving's errors and metadata say it."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum)


def tf_type_name(dtype: tf.DType) -> str:
    """TensorFlow's DataTypeString of a dtype (DT_FLOAT: float), as TF Serving's JSON
    type errors say it."""
    return dtype_name(dtype).removeprefix("DT_").lower()


def _leading_depth(value: Any) -> int:
    """How deep the lists go along the first elements (the rank numpy would find)."""
    depth = 0
    while isinstance(value, list) and value:
        value = value[0]
        depth += 1
    return depth


def json_to_array(value: Any, info: TensorInfo, where: str) -> np.ndarray:
    """A JSON value (number, string, b64 object, nested lists) as an array of the input's dtype."""
    too_deep = (
        f"{where}: lists nested deeper than {MAX_JSON_RANK} levels; "
        f"a tensor has at most {MAX_JSON_RANK} dimensions"
    )
    if _leading_depth(value) > MAX_JSON_RANK:
        raise invalid_argument(too_deep)
    try:
        return _json_to_array(value, info, where)
    except RecursionError:  # deep lists further in, e.g. [[1], [[[[...]]]]]
        raise invalid_argument(too_deep) from None


def _json_to_array(value: Any, info: TensorInfo, where: str) -> np.ndarray:
    if info.is_string:
        leaves = _string_leaves(value, where)
        try:
            array = np.array(leaves, dtype=object)
        except ValueError:
            raise invalid_argument(f"{where}: {_RAGGED}") from None
        if array.dtype != object or (array.size and not isinstance(array.flat[0], bytes)):
            raise invalid_argument(f"{where}: {_RAGGED}")
        return array
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        raise invalid_argument(f"{where}: {_RAGGED}") from None
    target = info.numpy_dtype
    if array.dtype.kind not in "iuf":
        if array.dtype.kind == "b" and target.kind == "b":
            return array
        offender = _first_non_number(value)
        if offender is _NOT_FOUND:
            raise invalid_argument(f"{where}: {_RAGGED}")
        raise _type_error(where, offender, info)
    if target.kind == "b" and array.size:
        raise _type_error(where, array.flat[0].item(), info)
    if target.kind in "iu":
        _check_integers(array, target, info, where)
    elif target.kind == "f" and array.size:
        _check_float_range(array, target, info, where)
    return array.astype(target, copy=False)


def _check_integers(array: np.ndarray, target: np.dtype, info: TensorInfo, where: str) -> None:
    """Integers the target dtype holds exactly: no fractions, nothing out of range, and
    no float (JSON integers beyond 64 bits, or any number among floats) of 2**53 or more."""
    if array.dtype.kind == "f":
        fractional = np.mod(array, 1) != 0
        if fractional.any():
            raise _type_error(where, array[fractional].flat[0].item(), info)
        if array.size and np.abs(array).max() >= _EXACT_FLOAT_INT:
            raise invalid_argument(
                f"{where}: {np.abs(array).max():.17g} is not an exact integer here: "
                "integers of 2**53 or more are exact only as JSON integers (no fraction, "
                f"no exponent, none among floats) within the {dtype_name_of(info)} range"
            )
    limits = _integer_limits(target)
    if array.size and (array.min() < limits.min or array.max() > limits.max):
        raise invalid_argument(
            f"{where}: values must be in {limits.min}..{limits.max} for a "
            f"{dtype_name_of(info)} tensor, got min {array.min()} max {array.max()}"
        )


def _check_float_range(array: np.ndarray, target: np.dtype, info: TensorInfo, where: str) -> None:
    """Finite numbers only: a value beyond the float type's range would become infinity."""
    largest = float(np.finfo(target).max)
    low, high = array.min(), array.max()
    if low < -largest or high > largest:
        raise invalid_argument(
            f"{where}: values must be within -{largest:g}..{largest:g} for a "
            f"{dtype_name_of(info)} tensor, got min {low:g} max {high:g}"
        )


@functools.cache
def _integer_limits(dtype: np.dtype) -> np.iinfo:
    return np.iinfo(dtype)


def dtype_name_of(info: TensorInfo) -> str:
    return dtype_name(info.dtype)


_RAGGED = "ragged or mixed nested lists; every list at one depth must have the same length"


def _check_rank(array: np.ndarray, info: TensorInfo, where: str) -> None:
    if info.shape is None:
        return
    expected = "[" + ", ".join("N" if d < 0 else str(d) for d in info.shape) + "]"
    if array.ndim != len(info.shape) or any(
        d >= 0 and d != actual for d, actual in zip(info.shape, array.shape, strict=False)
    ):
        raise invalid_argument(
            f"{where}: expected shape {expected} for input '{info.key}', got {list(array.shape)}"
        )


def _unknown_input(keys: list[str], signature: Signature) -> None:
    unknown = sorted(set(keys) - set(signature.inputs))
    missing = sorted(set(signature.inputs) - set(keys))
    if unknown or missing:
        raise invalid_argument(
            f"input names do not match signature '{signature.name}': "
            + "; ".join(
                part
                for part in (
                    f"unknown {unknown}" if unknown else "",
                    f"missing {missing}" if missing else "",
                )
                if part
            )
            + f" (it takes {sorted(signature.inputs)})"
        )


def predict_inputs(
    body: dict[str, Any], signature: Signature
) -> tuple[dict[str, np.ndarray], bool]:
    """The request's inputs as arrays, and whether it used the row format."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {json_debug(body)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist"
        )
    if not has_instances and not has_inputs:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    single = next(iter(signature.inputs)) if len(signature.inputs) == 1 else None
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {json_debug(body)} Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(f"JSON Value: {json_debug(body)} No values in 'instances' array")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if named:
            columns: dict[str, list[Any]] = {}
            for index, instance in enumerate(instances):
                if not isinstance(instance, dict) or _is_b64(instance):
                    raise invalid_argument(
                        f"instances[{index}]: expected an object of named inputs like "
                        "instances[0], got a value"
                    )
                _unknown_input(list(instance), signature)
                for key, value in instance.items():
                    columns.setdefault(key, []).append(value)
        elif single is None:
            raise invalid_argument(
                "instances is a plain list, but signature "
                f"'{signature.name}' takes several inputs {sorted(signature.inputs)}: "
                "send a list of objects"
            )
        else:
            columns = {single: instances}
        arrays = {
            key: json_to_array(values, signature.inputs[key], f"instances ({key})")
            for key, values in columns.items()
        }
    else:
        value = body["inputs"]
        if isinstance(value, dict) and not _is_b64(value):
            _unknown_input(list(value), signature)
            named_values = value
        elif single is None:
            raise invalid_argument(
                f"'inputs' is a bare value, but signature '{signature.name}' takes several "
                f"inputs {sorted(signature.inputs)}: send an object"
            )
        else:
            named_values = {single: value}
        arrays = {
            key: json_to_array(v, signature.inputs[key], f"inputs ({key})")
            for key, v in named_values.items()
        }
    for key, array in arrays.items():
        _check_rank(array, signature.inputs[key], "instances" if has_instances else "inputs")
    return arrays, has_instances


def _json_value(key: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        as_b64 = key.endswith("_bytes")

        def convert(item: Any) -> Any:
            if isinstance(item, list):
                return [convert(i) for i in item]
            if as_b64:
                return {B64_KEY: base64.b64encode(item).decode()}
            try:
                return item.decode()
            except UnicodeDecodeError:
                return {B64_KEY: base64.b64encode(item).decode()}

        return convert(array.tolist())
    return array.tolist()


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """``predictions`` (row format) or ``outputs`` (columnar), shaped as TF Serving does."""
    values = {key: _json_value(key, array) for key, array in outputs.items()}
    if not row_format:
        if len(values) == 1:
            return {"outputs": next(iter(values.values()))}
        return {"outputs": values}
    sizes = {key: len(array) if array.ndim else None for key, array in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise invalid_argument(
            f"outputs have different batch sizes {sizes}; use the columnar format ('inputs')"
        )
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    keys = list(values)
    count = next(iter(sizes.values()))
    return {"predictions": [{key: values[key][i] for key in keys} for i in range(count)]}


def _feature(value: Any, where: str) -> tf.train.Feature:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise invalid_argument(f"{where}: empty feature list")
    if all(isinstance(i, bool) for i in items):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(i) for i in items]))
    if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        for i in items:
            if not _INT64.min <= i <= _INT64.max:
                raise invalid_argument(
                    f"{where}: has uint64_t element {i}. Only int64_t is supported."
                )
        return tf.train.Feature(int64_list=tf.train.Int64List(value=items))
    if all(isinstance(i, int | float) and not isinstance(i, bool) for i in items):
        for i in items:
            if abs(i) > _FLOAT32_MAX:
                raise invalid_argument(
                    f"{where}: {i:g} is out of range for a float feature "
                    f"(-{_FLOAT32_MAX:g}..{_FLOAT32_MAX:g})"
                )
        return tf.train.Feature(float_list=tf.train.FloatList(value=items))
    if all(isinstance(i, str) or _is_b64(i) for i in items):
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(
                value=[decode_b64(i, where) if _is_b64(i) else i.encode() for i in items]
            )
        )
    raise invalid_argument(
        f'{where}: a feature is a number, a string, a {{"b64": ...}} object or a list of '
        f"one of those, got {_short(value)}"
    )


def _features(obj: Any, where: str) -> dict[str, tf.train.Feature]:
    if not isinstance(obj, dict):
        raise invalid_argument(
            f"{where}: Example must be JSON object but got JSON {json_type(obj)} {_short(obj)}"
        )
    return {name: _feature(value, f"{where}.{name}") for name, value in obj.items()}


def classify_examples(body: dict[str, Any]) -> list[bytes]:
    """``examples`` (with ``context`` merged into each) as serialized tf.Example."""
    if "examples" not in body:
        raise invalid_argument(
            f"JSON Value: {json_debug(body)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    examples = body["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {json_debug(body)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(f"JSON Value: {json_debug(body)} 'examples' value is an empty array")
    context = _features(body["context"], "context") if "context" in body else {}
    serialized = []
    for index, example in enumerate(examples):
        features = {**context, **_features(example, f"examples[{index}]")}
        proto = tf.train.Example(features=tf.train.Features(feature=features))
        serialized.append(proto.SerializeToString())
    return serialized


def classify_response(labels: np.ndarray | None, scores: np.ndarray) -> dict[str, Any]:
    """``results``: per example, a ``[label, score]`` pair per class, in the model's order."""
    results = []
    for row in range(scores.shape[0]):
        row_scores = scores[row].tolist()
        if labels is None:
            row_labels = [""] * len(row_scores)
        else:
            row_labels = [label.decode() for label in labels[row].tolist()]
        results.append([[lb, s] for lb, s in zip(row_labels, row_scores, strict=True)])
    return {"results": results}
