"""What the ONNX Format checks beyond comparing outputs: an fp16 model's every fp16 tensor stays in range."""

from __future__ import annotations

import numpy as np

from exporter.errors import first_line
from exporter.inputs import InputSet
from exporter.verify import Check


def onnx_checks(path, precision: str, input_sets: list[InputSet]) -> list[Check | None]:
    """The ONNX Format's extra checks (row.py: FORMAT.checks): an fp16 model's every fp16 tensor in range."""
    return [fp16_range_check(path, input_sets)] if precision == "fp16" else []


def fp16_range_check(path, input_sets: list[InputSet]) -> Check | None:
    """Fail when a float16 tensor of an ONNX model overflows on the verification inputs."""
    from exporter.targets.onnx.runner import nonfinite_fp16_tensors

    if not input_sets:
        return None
    batch = np.concatenate([s.array for s in input_sets[:2]])
    if not np.isfinite(batch).all():
        return None
    try:
        overflowing = nonfinite_fp16_tensors(path, batch)
    except Exception as exc:  # noqa: BLE001 - e.g. a baked batch: the artifact fails verification, verify does not crash
        return Check(
            "fp16 range", "every fp16 tensor", len(batch), "fail", f"the fp16 range probe cannot run the model: {first_line(exc)}"
        )
    if not overflowing:
        return Check("fp16 range", "every fp16 tensor", len(batch), "pass")
    shown = ", ".join(overflowing[:5])
    return Check(
        "fp16 range",
        "every fp16 tensor",
        len(batch),
        "fail",
        f"{len(overflowing)} fp16 tensor(s) overflow to inf/NaN ({shown}); keep those nodes in fp32",
    )
