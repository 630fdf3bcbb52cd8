"""numpy arrays to ``TensorProto``s, in the two forms TF Serving writes: values in the
dtype's typed field (its default for Predict responses) or raw ``tensor_content`` bytes
(compact; what the request logs use). Shared by the gRPC API (``grpc_api.py``) and the
request logs (``request_log.py``)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

# The repeated field holding each dtype's values in a TensorProto, and how many of
# its entries make one element (complex numbers take two).
VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", 1),
    types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_INT32: ("int_val", 1),
    types_pb2.DT_INT16: ("int_val", 1),
    types_pb2.DT_INT8: ("int_val", 1),
    types_pb2.DT_UINT8: ("int_val", 1),
    types_pb2.DT_UINT16: ("int_val", 1),
    types_pb2.DT_INT64: ("int64_val", 1),
    types_pb2.DT_UINT32: ("uint32_val", 1),
    types_pb2.DT_UINT64: ("uint64_val", 1),
    types_pb2.DT_BOOL: ("bool_val", 1),
    types_pb2.DT_STRING: ("string_val", 1),
    types_pb2.DT_HALF: ("half_val", 1),
    types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
}


def array_to_tensor(array: np.ndarray, *, content: bool = False) -> tensor_pb2.TensorProto:
    """numpy to TensorProto with the values in the dtype's typed field (``float_val``,
    ``int64_val``, ``string_val``...), as TF Serving's Predict writes its outputs by
    default (Tensor::AsProtoField; not ``tensor_content``). ``content=True``: numbers as
    raw ``tensor_content`` bytes instead (Tensor::AsProtoTensorContent), smaller and
    several times faster to build; byte strings stay in ``string_val`` either way. Both
    forms read back the same with ``tf.make_ndarray``."""
    proto = tensor_pb2.TensorProto()
    fill_tensor(proto, array, content=content)
    return proto


def fill_tensor(proto: tensor_pb2.TensorProto, array: np.ndarray, *, content: bool = False) -> None:
    """``array_to_tensor`` written into an empty ``proto`` in place, such as a response's
    ``outputs[key]``: no second copy of the values."""
    if array.dtype == object:
        values = array.ravel().tolist()
        if not all(isinstance(value, bytes) for value in values):
            proto.CopyFrom(tf.make_tensor_proto(array))
            return
        # tf.make_tensor_proto walks object arrays in Python, several times slower.
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(values)
    elif content and array.dtype.kind in "biufc":
        proto.dtype = datatype_enum(array.dtype)
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    else:
        dtype = datatype_enum(array.dtype)
        if dtype == types_pb2.DT_STRING or dtype not in VALUE_FIELDS:
            proto.CopyFrom(tf.make_tensor_proto(array))
            return
        field, _ = VALUE_FIELDS[dtype]
        flat = np.ascontiguousarray(array).ravel()
        if dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
            flat = flat.view(np.uint16)
        elif dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
            flat = flat.view(flat.real.dtype)  # real and imaginary parts interleaved
        proto.dtype = dtype
        getattr(proto, field).extend(flat.tolist())
    dims = proto.tensor_shape.dim
    for size in array.shape:
        # add() then set: add(size=...) costs several times more (protobuf's C++ API).
        dims.add().size = size


# TensorFlow's DataType enum by numpy dtype, filled on first use: tf.dtypes.as_dtype
# costs more than the rest of a small response.
_DATATYPE_ENUMS: dict[np.dtype, int] = {}


def datatype_enum(dtype: np.dtype) -> int:
    """The TensorProto dtype (``types_pb2.DT_*``) of a numpy dtype; TypeError when
    TensorFlow has none."""
    enum = _DATATYPE_ENUMS.get(dtype)
    if enum is None:
        enum = _DATATYPE_ENUMS[dtype] = tf.dtypes.as_dtype(dtype).as_datatype_enum
    return enum
