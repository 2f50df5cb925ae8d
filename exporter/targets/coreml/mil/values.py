"""MIL values (immediate or in a weight blob) and types -> NumPy."""

from __future__ import annotations

import numpy as np

from exporter.errors import BadInputError
from exporter.targets.coreml.mil.package import MLPackage, unpack_sub_byte

NUMPY_DTYPES = {
    "BOOL": np.dtype(bool),
    "STRING": np.dtype(object),
    "FLOAT16": np.dtype(np.float16),
    "FLOAT32": np.dtype(np.float32),
    "FLOAT64": np.dtype(np.float64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
}
# Sub-byte integer types: (bits, signed); values are unpacked to int8 / uint8.
SUB_BYTE = {
    "INT4": (4, True),
    "UINT1": (1, False),
    "UINT2": (2, False),
    "UINT3": (3, False),
    "UINT4": (4, False),
    "UINT6": (6, False),
}


def dtype_name(code: int) -> str:
    from exporter.targets.coreml.mil.package import proto_modules

    return proto_modules()[1].DataType.Name(code)


def numpy_dtype(name: str) -> np.dtype:
    if name in NUMPY_DTYPES:
        return NUMPY_DTYPES[name]
    if name in SUB_BYTE:
        return np.dtype(np.int8 if SUB_BYTE[name][1] else np.uint8)
    raise BadInputError(f"MIL data type {name} is not supported by the interpreter")


def tensor_shape(tensor_type) -> tuple | None:
    """Static shape of a TensorType, or None where a dimension is unknown."""
    dims = []
    for dim in tensor_type.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            return None
        dims.append(int(dim.constant.size))
    return tuple(dims)


def decode_value(value, package: MLPackage):
    """A MIL Value -> ndarray (tensors), str/list (strings, lists)."""
    kind = value.type.WhichOneof("type")
    source = value.WhichOneof("value")
    if kind == "listType":
        return [decode_value(v, package) for v in value.immediateValue.list.values]
    if kind != "tensorType":
        raise BadInputError(f"MIL values of type {kind} are not supported by the interpreter")
    ttype = value.type.tensorType
    name = dtype_name(ttype.dataType)
    shape = tensor_shape(ttype)
    if shape is None:
        raise BadInputError("a constant has a shape with unknown dimensions")
    count = int(np.prod(shape)) if shape else 1
    if source == "blobFileValue":
        blob = value.blobFileValue
        dtype = numpy_dtype(name)
        raw = package.weight_file(blob.fileName).read(int(blob.offset), dtype.name if name in NUMPY_DTYPES else None)
        array = _from_bytes(raw, name, count)
    elif source == "immediateValue":
        array = _immediate(value.immediateValue.tensor, name, count)
    else:
        raise BadInputError(f"MIL value source {source} is not supported by the interpreter")
    if array.size != count:
        raise BadInputError(f"a MIL constant holds {array.size} values, its type says {count}")
    return array.reshape(shape)


def _from_bytes(raw: bytes, name: str, count: int) -> np.ndarray:
    if name in SUB_BYTE:
        bits, signed = SUB_BYTE[name]
        return unpack_sub_byte(raw, bits, count, signed)
    dtype = numpy_dtype(name)
    if len(raw) < count * dtype.itemsize:
        raise BadInputError(f"a weight blob holds {len(raw)} bytes, {count * dtype.itemsize} needed")
    return np.frombuffer(raw, dtype=dtype, count=count).copy()


def _immediate(tensor, name: str, count: int) -> np.ndarray:
    field = tensor.WhichOneof("value")
    if field == "bytes":
        return _from_bytes(tensor.bytes.values, name, count)
    if field == "strings":
        return np.array(list(tensor.strings.values), dtype=object)
    if field is None:
        return np.zeros(0, dtype=numpy_dtype(name))
    values = list(getattr(tensor, field).values)
    return np.array(values).astype(numpy_dtype(name))
