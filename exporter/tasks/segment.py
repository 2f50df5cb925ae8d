"""The segment task: (N, C, H, W) class maps, judged by pixel agreement and mIoU of the argmax maps; eval: mIoU."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from exporter.tasks import elementwise

NAME = "segment"
CLASS_PER_SAMPLE = False  # classes per pixel
FLOAT_HEAD = False
MODEL_NOUN = "segmentation model"
DEMO = "exporter.demo_segment"  # `cnnexport demo --task segment`: a tiny U-Net on generated shapes
EVAL = "exporter.tasks.segment_eval"  # `cnnexport eval`: mIoU and pixel accuracy on image + mask pairs


def recognises(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[1] > 1


def check_shape(name: str, shape: tuple[int, ...]) -> str | None:
    return None if len(shape) == 4 else f"output {name!r} has shape {shape}; --task segment needs an (N, C, H, W) output"


def classes_of(shape: tuple[int, ...]) -> int | None:
    return shape[1]


def describe_output(output) -> str:
    """What one output holds per sample, in words (Core ML's output descriptions)."""
    shape = "x".join(map(str, output.shape))
    return f"class-map logits ({shape}: {output.classes} classes per pixel; argmax over axis 1 gives the class map)"


def pixel_metrics(ref: np.ndarray, out: np.ndarray, tol, value_range: float) -> dict:
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


def agreement(ref64: np.ndarray, out64: np.ndarray, tol, allowed_rel: float, value_range: float) -> tuple[dict, list[str]]:
    """Pixel agreement and class-map mIoU; the tie margin widens with the error the rule allows (noise)."""
    metrics = pixel_metrics(ref64, out64, replace(tol, tie_margin=tol.tie_margin * allowed_rel / tol.max_rel_err), value_range)
    reasons = []
    if metrics.get("pixel_agreement") is not None and metrics["pixel_agreement"] < tol.min_top1:
        reasons.append(f"pixel agreement {metrics['pixel_agreement']:.3f} < {tol.min_top1:g}")
    if metrics.get("miou") is not None and metrics["miou"] < tol.min_miou:
        reasons.append(f"class-map mIoU {metrics['miou']:.3f} < {tol.min_miou:g}")
    return metrics, reasons


def compare(ref64, out64, tol, noise=None, noise_cosine=None, image_size=None) -> dict:
    return elementwise.compare(ref64, out64, tol, NAME, True, agreement, noise, noise_cosine)


def agreement_text(metrics: dict) -> str | None:
    if metrics.get("pixel_agreement") is None:
        return None
    miou = metrics.get("miou")
    return f"{metrics['pixel_agreement']:.3f} px, mIoU {'-' if miou is None else f'{miou:.3f}'}"


def describe_rule(tol) -> str:
    return tol.describe()
