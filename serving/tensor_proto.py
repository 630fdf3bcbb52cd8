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
    if array.dtype == object:
        values = array.ravel().tolist()
        if not all(isinstance(value, bytes) for value in values):
            return tf.make_tensor_proto(array)
        # tf.make_tensor_proto walks object arrays in Python, several times slower.
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values)
    elif content and array.dtype.kind in "biufc":
        proto = tensor_pb2.TensorProto(
            dtype=tf.dtypes.as_dtype(array.dtype).as_datatype_enum,
            tensor_content=np.ascontiguousarray(array).tobytes(),
        )
    else:
        dtype = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
        if dtype == types_pb2.DT_STRING or dtype not in VALUE_FIELDS:
            return tf.make_tensor_proto(array)
        field, _ = VALUE_FIELDS[dtype]
        flat = np.ascontiguousarray(array).ravel()
        if dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
            flat = flat.view(np.uint16)
        elif dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
            flat = flat.view(flat.real.dtype)  # real and imaginary parts interleaved
        proto = tensor_pb2.TensorProto(dtype=dtype)
        getattr(proto, field).extend(flat.tolist())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto
