"""TensorRT's calibration cache: the int8 scale of every activation, in TensorRT's text format.

``quantize --target tensorrt`` writes one beside the symmetric Q/DQ model (the scales of its
activation QuantizeLinear nodes), so an implicit-quantization build (``--int8-mode calibrator``,
TensorRT 10) uses the very scales that were verified. The header names the TensorRT version.
"""

from __future__ import annotations

import struct

from exporter.errors import BadInputError
from exporter.targets.tensorrt.version import version_code


def activation_scales(model) -> dict[str, float]:
    """tensor name -> scale of every activation QuantizeLinear in a QDQ model."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    scales: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        scale = inits.get(node.input[1])
        if scale is None:
            continue
        value = numpy_helper.to_array(scale)
        if value.size == 1:
            scales[node.input[0]] = float(value.reshape(()))
    return scales


def calibration_cache_text(scales: dict[str, float], trt_version: str) -> str:
    """TensorRT's text calibration cache: a header, then `tensor: <big-endian float32 hex>` lines."""
    lines = [f"TRT-{version_code(trt_version)}-EntropyCalibration2"]
    for name in sorted(scales):
        lines.append(f"{name}: {struct.pack('>f', scales[name]).hex()}")
    return "\n".join(lines) + "\n"


def parse_calibration_cache(text: str) -> tuple[str, dict[str, float]]:
    """Inverse of calibration_cache_text (used by tests and the TensorRT stage)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise BadInputError("not a TensorRT calibration cache: the first line must be TRT-<version>-<algorithm>")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, hexval = line.rpartition(": ")
        try:
            if not sep:
                raise ValueError
            scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
        except (ValueError, struct.error):
            raise BadInputError(
                f"calibration cache line {number} is not `tensor: <8 hex digits>` (a big-endian float32 scale): {line[:80]!r}"
            ) from None
    return lines[0], scales
