"""The per-output comparison: the pass rule's numbers as data (one table per precision), and one
output compared by its task (exporter/tasks/; exporter/verify.py runs the artifact and reads these)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from exporter import tasks
from exporter.tasks import detect


@dataclass(frozen=True)
class Tolerance:
    max_rel_err: float
    min_cosine: float
    min_top1: float
    min_miou: float = 0.99
    tie_margin: float = 1e-4  # x range: a segmentation pixel with a closer reference call is not judged
    noise_multiple: float | None = None  # fp32: errors within this multiple of the reference's fp32-vs-fp64 noise pass
    detect: detect.DetectRule = detect.RULES["fp32"]  # detection outputs' thresholds (exporter/tasks/detect.py)

    def describe(self) -> str:
        text = (
            f"|artifact - reference| <= {self.max_rel_err:g} x reference range (per channel for regression outputs), "
            f"cosine >= {self.min_cosine:g} (centred for class outputs), top-1 / pixel agreement >= {self.min_top1:g}, "
            f"class-map mIoU >= {self.min_miou:g}"
        )
        if self.noise_multiple:
            text += f"; or error <= {self.noise_multiple:g} x the reference's own fp32-vs-fp64 noise"
        return text


# One visible table of per-precision defaults; every value can be overridden on the command line.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        max_rel_err=1e-4,
        min_cosine=0.99999,
        min_top1=1.0,
        min_miou=0.99,
        tie_margin=1e-4,
        noise_multiple=4.0,
        detect=detect.RULES["fp32"],
    ),
    "fp16": Tolerance(
        max_rel_err=1e-2, min_cosine=0.999, min_top1=0.99, min_miou=0.95, tie_margin=1e-2, detect=detect.RULES["fp16"]
    ),
    "int8": Tolerance(
        max_rel_err=0.25, min_cosine=0.98, min_top1=0.90, min_miou=0.80, tie_margin=0.02, detect=detect.RULES["int8"]
    ),
}


def tolerance_for(
    precision: str, max_rel_err=None, min_cosine=None, min_top1=None, min_miou=None, conf=None, iou=None
) -> Tolerance:
    """The precision's defaults with the given overrides; an explicit max_rel_err is the rule (no noise widening);
    ``conf`` / ``iou``: how detect outputs are decoded."""
    base = TOLERANCES[precision]
    decoding = {"conf": conf, "nms_iou": iou}
    if any(v is not None for v in decoding.values()):
        base = replace(base, detect=replace(base.detect, **{k: v for k, v in decoding.items() if v is not None}))
    overrides = {"max_rel_err": max_rel_err, "min_cosine": min_cosine, "min_top1": min_top1, "min_miou": min_miou}
    if max_rel_err is not None:
        overrides["noise_multiple"] = None
    return replace(base, **{k: v for k, v in overrides.items() if v is not None or k == "noise_multiple"})


def compare_arrays(
    ref: np.ndarray,
    out: np.ndarray,
    tol: Tolerance,
    task: str | None = None,
    noise: float | None = None,
    noise_cosine: float | None = None,
    image_size: float | None = None,
) -> dict:
    """Metrics of one output, in float64. Returns the Check fields plus status/reason.

    ``task`` (a name of exporter/tasks/) picks the metrics; default: the task the shape suggests.
    ``noise`` / ``noise_cosine``: the reference's own fp32-vs-fp64 max error / range and cosine on
    these inputs, which widen an fp32 rule that has a ``noise_multiple`` to that multiple of the
    reference's own rounding. ``image_size``: what a detect output's box coordinates are judged
    against (exporter/tasks/detect.py).
    """
    if out.shape != ref.shape:
        return {"status": "fail", "reason": f"output shape {tuple(out.shape)} differs from reference {tuple(ref.shape)}"}
    ref64 = ref.astype(np.float64)
    out64 = out.astype(np.float64)
    if not np.isfinite(out64).all():
        bad = int((~np.isfinite(out64)).sum())
        return {"status": "fail", "reason": f"{bad} output values are NaN or infinite"}
    task_module = tasks.get(task or tasks.infer(ref.shape))
    return task_module.compare(ref64, out64, tol, noise, noise_cosine, image_size)
