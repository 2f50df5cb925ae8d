"""The per-output comparison: the pass rule's numbers as data (one table per precision) and the
metrics of one output by its task (exporter/verify.py runs the artifact and reads these)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from exporter.outputs import infer_task
from exporter.tasks import detect

CHANNEL_RANGE_FLOOR = 0.1  # a regression channel's range counts as at least this share of the output's range


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


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-300)
    return np.where(both_zero, 1.0, cos)


def centred(x: np.ndarray) -> np.ndarray:
    """Logits with what softmax/argmax ignore removed: each class's mean over the pixels (class maps),
    then each sample's (pixel's) mean over the classes. A constant offset becomes 0."""
    x = x.astype(np.float64)
    if x.ndim > 2:
        x = x - x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
    return x - x.mean(axis=1, keepdims=True)


def _class_cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Centred cosine; the plain one where the reference has (almost) nothing left once centred."""
    cr, co = centred(ref), centred(out)
    left = np.linalg.norm(cr.reshape(len(cr), -1), axis=1)
    whole = np.linalg.norm(ref.reshape(len(ref), -1).astype(np.float64), axis=1)
    if np.all(left > 1e-6 * np.maximum(whole, 1e-300)):
        return float(_cosines(cr, co).min())
    return float(_cosines(ref, out).min())


def _channel_rel_err(diff: np.ndarray, ref: np.ndarray, value_range: float) -> float:
    """Worst max error / range over the channels (axis 1 of (N, C, H, W), the last axis of (N, A, K))."""
    axes: tuple[int, ...]
    if ref.ndim == 4:
        axes = (0, 2, 3)
    elif ref.ndim == 3:
        axes = (0, 1)
    else:
        return float(diff.max() / value_range) if diff.size else 0.0
    ranges = ref.max(axis=axes) - ref.min(axis=axes)
    ranges = np.maximum(ranges, CHANNEL_RANGE_FLOOR * value_range)
    return float((diff.max(axis=axes) / ranges).max()) if diff.size else 0.0


def _segment_metrics(ref: np.ndarray, out: np.ndarray, tol: Tolerance, value_range: float) -> dict:
    """Per-pixel argmax agreement and mIoU over the pixels whose reference call is not a near tie."""
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.concatenate([ref, ref - np.inf], axis=1)
    margin = top2[:, -1] - top2[:, -2]
    decisive = margin > tol.tie_margin * value_range
    ref_cls, out_cls = ref.argmax(axis=1)[decisive], out.argmax(axis=1)[decisive]
    metrics: dict[str, float] = {"pixels_decisive": int(decisive.sum())}
    if not decisive.any():
        return metrics
    metrics["pixel_agreement"] = float((ref_cls == out_cls).mean())
    ious = []
    for c in np.union1d(ref_cls, out_cls):
        union = np.sum((ref_cls == c) | (out_cls == c))
        ious.append(np.sum((ref_cls == c) & (out_cls == c)) / union)
    metrics["miou"] = float(np.mean(ious))
    return metrics


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

    ``task`` (classify / segment / dense / regress) picks the agreement metric; default: from the
    shape. ``noise`` / ``noise_cosine``: the reference's own fp32-vs-fp64 max error / range and
    cosine on these inputs, which widen an fp32 rule that has a ``noise_multiple`` to that multiple
    of the reference's own rounding. ``image_size``: what a detect output's box coordinates are
    judged against (exporter/tasks/detect.py).
    """
    if out.shape != ref.shape:
        return {"status": "fail", "reason": f"output shape {tuple(out.shape)} differs from reference {tuple(ref.shape)}"}
    ref64 = ref.astype(np.float64)
    out64 = out.astype(np.float64)
    if not np.isfinite(out64).all():
        bad = int((~np.isfinite(out64)).sum())
        return {"status": "fail", "reason": f"{bad} output values are NaN or infinite"}
    task = task or infer_task(ref.shape)
    if task == "detect":
        return detect.compare(ref64, out64, tol.detect, image_size)
    diff = np.abs(out64 - ref64)
    value_range = float(ref64.max() - ref64.min()) or 1.0
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = max_abs / value_range
    classes = task in ("classify", "segment")
    cosine = _class_cosine(ref64, out64) if classes else float(_cosines(ref64, out64).min())
    metrics: dict[str, Any] = {"task": task, "max_abs_err": max_abs, "max_rel_err": rel, "cosine": cosine}
    judged_rel = rel
    if not classes:
        judged_rel = metrics["max_channel_rel_err"] = _channel_rel_err(diff, ref64, value_range)
    allowed_rel, min_cosine = tol.max_rel_err, tol.min_cosine
    if noise is not None and tol.noise_multiple:
        metrics["noise_rel_err"] = noise
        allowed_rel = max(allowed_rel, tol.noise_multiple * noise)
        if noise_cosine is not None:
            min_cosine = min(min_cosine, 1 - tol.noise_multiple * max(1 - noise_cosine, 0.0))
        if judged_rel > tol.max_rel_err and judged_rel <= allowed_rel:
            metrics["decided_by"] = "noise"
    reasons = []
    if task == "classify" and ref.shape[1] > 1:
        ref_top = np.argsort(-ref64, axis=1)
        out_top = np.argsort(-out64, axis=1)
        agree = ref_top[:, 0] == out_top[:, 0]
        margin = ref64[np.arange(len(ref64)), ref_top[:, 0]] - ref64[np.arange(len(ref64)), ref_top[:, 1]]
        decisive = margin > allowed_rel * value_range
        k = min(5, ref.shape[1])
        overlap = np.mean([len(set(r[:k]) & set(o[:k])) / k for r, o in zip(ref_top, out_top)])
        metrics["top1_agreement"] = float(agree.mean())
        metrics["top1_decisive"] = int(decisive.sum())
        metrics["top5_overlap"] = float(overlap)
        if decisive.any() and float(agree[decisive].mean()) < tol.min_top1:
            reasons.append(f"top-1 agreement {float(agree[decisive].mean()):.3f} < {tol.min_top1:g}")
    elif task == "segment":
        metrics.update(
            _segment_metrics(ref64, out64, replace(tol, tie_margin=tol.tie_margin * allowed_rel / tol.max_rel_err), value_range)
        )
        if metrics.get("pixel_agreement") is not None and metrics["pixel_agreement"] < tol.min_top1:
            reasons.append(f"pixel agreement {metrics['pixel_agreement']:.3f} < {tol.min_top1:g}")
        if metrics.get("miou") is not None and metrics["miou"] < tol.min_miou:
            reasons.append(f"class-map mIoU {metrics['miou']:.3f} < {tol.min_miou:g}")
    if judged_rel > allowed_rel or math.isnan(judged_rel):
        where = "x range" if classes else "x its channel's range"
        noise_text = (
            f" (and > {tol.noise_multiple:g} x the reference's fp32 noise {noise:.3g})"
            if noise is not None and tol.noise_multiple
            else ""
        )
        reasons.insert(0, f"max error {judged_rel:.3g} {where} > {tol.max_rel_err:g}{noise_text}")
    if cosine < min_cosine:
        reasons.append(f"{'centred ' if classes else ''}cosine {cosine:.6f} < {min_cosine:g}")
    metrics["status"] = "fail" if reasons else "pass"
    metrics["reason"] = "; ".join(reasons)
    return metrics
