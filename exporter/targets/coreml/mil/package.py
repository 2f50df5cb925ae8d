"""Read an `.mlpackage`: its manifest, the Core ML model protobuf and the MIL weight blobs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from exporter.errors import BackendUnavailable, BadInputError

# MILBlob storage format (coremltools/mlmodel/src/MILBlob/Blob/StorageFormat.hpp):
#   storage_header: uint32 count, uint32 version (=2), 7 x uint64 reserved      -> 64 bytes
#   blob_metadata:  uint32 sentinel (0xDEADBEEF), uint32 mil_dtype, uint64 sizeInBytes,
#                   uint64 offset (of the data, from the file start), 5 x uint64 reserved -> 64 bytes
# A BlobFileValue's offset points at a blob_metadata; both structures are 64-byte aligned.
BLOB_SENTINEL = 0xDEADBEEF
_HEADER = struct.Struct("<II")
_METADATA = struct.Struct("<IIQQ")
# BlobDataType codes (MILBlob/Blob/BlobDataType.hpp) for the dtypes whose byte size we check.
BLOB_DTYPE_CODES = {"float16": 1, "float32": 2, "uint8": 3, "int8": 4}


def quiet_import_coremltools():
    """Import coremltools without its import-time chatter (missing macOS runtime, untested versions)."""
    import contextlib
    import io
    import logging
    import sys

    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import coremltools
    finally:
        root.setLevel(level)
    return coremltools


def proto_modules():
    """coremltools' generated protobuf modules (Model_pb2, MIL_pb2, FeatureTypes_pb2)."""
    try:
        quiet_import_coremltools()
        from coremltools.proto import FeatureTypes_pb2, MIL_pb2, Model_pb2
    except ImportError as exc:
        raise BackendUnavailable(
            f"reading Core ML packages needs coremltools ({exc}); install it with: pip install 'cnnexport[coreml]'"
        ) from None
    return Model_pb2, MIL_pb2, FeatureTypes_pb2


class WeightFile:
    """One MIL blob storage file, read once; ``read(offset, dtype)`` returns the blob's raw bytes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise BadInputError(f"weight file {self.path} cannot be read ({exc.strerror})") from None
        if len(self.data) < 64:
            raise BadInputError(f"weight file {self.path} is truncated ({len(self.data)} bytes)")
        self.count, self.version = _HEADER.unpack_from(self.data, 0)
        if self.version != 2:
            raise BadInputError(f"weight file {self.path} has storage version {self.version}; only version 2 is known")

    def read(self, offset: int, np_dtype: str | None = None) -> bytes:
        if offset + 64 > len(self.data):
            raise BadInputError(f"weight blob at offset {offset} lies outside {self.path.name}")
        sentinel, code, size, data_offset = _METADATA.unpack_from(self.data, offset)
        if sentinel != BLOB_SENTINEL:
            raise BadInputError(f"weight blob at offset {offset} in {self.path.name} has a bad sentinel {sentinel:#x}")
        if np_dtype in BLOB_DTYPE_CODES and code != BLOB_DTYPE_CODES[np_dtype]:
            raise BadInputError(f"weight blob at offset {offset} stores dtype code {code}, the program expects {np_dtype}")
        if data_offset + size > len(self.data):
            raise BadInputError(f"weight blob at offset {offset} runs past the end of {self.path.name}")
        return self.data[data_offset : data_offset + size]


class MLPackage:
    """The parts of an `.mlpackage` the interpreter needs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise BadInputError(f"{self.path} is not an .mlpackage folder")
        manifest_path = self.path / "Manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
            self.model_path = self.path / "Data" / root["path"]
        except (OSError, ValueError, KeyError) as exc:
            raise BadInputError(f"{self.path} has no readable Manifest.json ({exc})") from None
        Model_pb2, _, _ = proto_modules()  # noqa: N806 - the generated protobuf module's own name
        self.spec = Model_pb2.Model()
        try:
            self.spec.ParseFromString(self.model_path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and OSError
            raise BadInputError(f"{self.model_path} is not a readable Core ML model ({exc})") from None
        if self.spec.WhichOneof("Type") != "mlProgram":
            raise BadInputError(f"{self.path} holds a {self.spec.WhichOneof('Type')} model; only ML programs can be interpreted")
        self.weights_dir = self.model_path.parent / "weights"
        self._files: dict[str, WeightFile] = {}

    @property
    def user_metadata(self) -> dict[str, str]:
        return dict(self.spec.description.metadata.userDefined)

    def weight_file(self, file_name: str) -> WeightFile:
        """``@model_path/weights/weight.bin`` -> the WeightFile (cached)."""
        relative = file_name.split("@model_path/", 1)[-1]
        target = (self.model_path.parent / relative).resolve()
        if self.model_path.parent.resolve() not in target.parents:
            raise BadInputError(f"weight file {file_name} points outside the package")
        key = str(target)
        if key not in self._files:
            self._files[key] = WeightFile(target)
        return self._files[key]


def unpack_sub_byte(raw: bytes, nbits: int, count: int, signed: bool) -> np.ndarray:
    """Bit fields packed LSB first (constexpr_lut_to_dense docs) -> one integer per element."""
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[: count * nbits]
    if bits.size < count * nbits:
        raise BadInputError(f"packed data holds {bits.size} bits, {count * nbits} needed")
    weights = (1 << np.arange(nbits, dtype=np.int32)).astype(np.int32)
    values = bits.reshape(count, nbits).astype(np.int32) @ weights
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)
