"""The comparison every task but detect starts from: max error against the range, and cosine.

A task whose values are class scores (classify, segment) is compared centred (what softmax and
argmax ignore removed) against the whole output's range; a regression output (dense, regress)
per channel against each channel's own range. An fp32 rule with a noise multiple widens to that
multiple of the reference's own fp32-vs-fp64 rounding on the same inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CHANNEL_RANGE_FLOOR = 0.1  # a regression channel's range counts as at least this share of the output's range


def any_shape(name: str, shape: tuple[int, ...]) -> str | None:
    """A regression-like task takes an output of any shape."""
    return None


def no_classes(shape: tuple[int, ...]) -> int | None:
    return None


def numbers_only(metrics: dict) -> str | None:
    """A regression-like task has no agreement column of its own: the error columns say it."""
    return None


def shared_rule(tol) -> str:
    """The rule in words of every task compared here (errors, cosine, and the class metrics where they apply)."""
    return tol.describe()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


def class_cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Centred cosine; the plain one where the reference has (almost) nothing left once centred."""
    cr, co = centred(ref), centred(out)
    left = np.linalg.norm(cr.reshape(len(cr), -1), axis=1)
    whole = np.linalg.norm(ref.reshape(len(ref), -1).astype(np.float64), axis=1)
    if np.all(left > 1e-6 * np.maximum(whole, 1e-300)):
        return float(cosines(cr, co).min())
    return float(cosines(ref, out).min())


def channel_rel_err(diff: np.ndarray, ref: np.ndarray, value_range: float) -> float:
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


def compare(
    ref64: np.ndarray,
    out64: np.ndarray,
    tol,
    task: str,
    class_scores: bool,
    agreement=None,
    noise: float | None = None,
    noise_cosine: float | None = None,
) -> dict:
    """Metrics of one output (float64 arrays of one shape, finite): error, cosine and the task's ``agreement``.

    ``agreement(ref64, out64, tol, allowed_rel, value_range) -> (metrics, reasons)`` adds what the
    task measures beyond the numbers (top-1, pixel agreement, mIoU); ``tol`` is an exporter.compare.Tolerance.
    """
    diff = np.abs(out64 - ref64)
    value_range = float(ref64.max() - ref64.min()) or 1.0
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = max_abs / value_range
    cosine = class_cosine(ref64, out64) if class_scores else float(cosines(ref64, out64).min())
    metrics: dict[str, Any] = {"task": task, "max_abs_err": max_abs, "max_rel_err": rel, "cosine": cosine}
    judged_rel = rel
    if not class_scores:
        judged_rel = metrics["max_channel_rel_err"] = channel_rel_err(diff, ref64, value_range)
    allowed_rel, min_cosine = tol.max_rel_err, tol.min_cosine
    if noise is not None and tol.noise_multiple:
        metrics["noise_rel_err"] = noise
        allowed_rel = max(allowed_rel, tol.noise_multiple * noise)
        if noise_cosine is not None:
            min_cosine = min(min_cosine, 1 - tol.noise_multiple * max(1 - noise_cosine, 0.0))
        if judged_rel > tol.max_rel_err and judged_rel <= allowed_rel:
            metrics["decided_by"] = "noise"
    reasons: list[str] = []
    if agreement is not None:
        measured, reasons = agreement(ref64, out64, tol, allowed_rel, value_range)
        metrics.update(measured)
    if judged_rel > allowed_rel or math.isnan(judged_rel):
        where = "x range" if class_scores else "x its channel's range"
        noise_text = (
            f" (and > {tol.noise_multiple:g} x the reference's fp32 noise {noise:.3g})"
            if noise is not None and tol.noise_multiple
            else ""
        )
        reasons.insert(0, f"max error {judged_rel:.3g} {where} > {tol.max_rel_err:g}{noise_text}")
    if cosine < min_cosine:
        reasons.append(f"{'centred ' if class_scores else ''}cosine {cosine:.6f} < {min_cosine:g}")
    metrics["status"] = "fail" if reasons else "pass"
    metrics["reason"] = "; ".join(reasons)
    return metrics
