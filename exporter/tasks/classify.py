"""The classify task: (N, C) class scores, judged by top-1 agreement and centred cosine; eval: top-1 / top-k."""

from __future__ import annotations

import numpy as np

from exporter.tasks import elementwise

NAME = "classify"
CLASS_PER_SAMPLE = True  # one class per sample: labels (Core ML's classifier outputs) and "classes per image" apply
FLOAT_HEAD = False  # INT8 stages quantize it like the rest
MODEL_NOUN = "classifier"
DEMO = "exporter.demo"  # `cnnexport demo --task classify`: LeNet-5 on scikit-learn's digits
EVAL = "exporter.tasks.classify_eval"  # `cnnexport eval`: top-1 / top-k on labelled images


def recognises(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[1] > 1


def check_shape(name: str, shape: tuple[int, ...]) -> str | None:
    return None if len(shape) == 2 else f"output {name!r} has shape {shape}; --task classify needs an (N, C) output"


def classes_of(shape: tuple[int, ...]) -> int | None:
    return shape[1]


def describe_output(output) -> str:
    """What one output holds per sample, in words (Core ML's output descriptions)."""
    return f"class logits, {output.classes} per sample"


def agreement(ref64: np.ndarray, out64: np.ndarray, tol, allowed_rel: float, value_range: float) -> tuple[dict, list[str]]:
    """Top-1 agreement over the samples whose reference top-1 margin is decisive, and the top-5 overlap."""
    if ref64.shape[1] <= 1:
        return {}, []
    ref_top = np.argsort(-ref64, axis=1)
    out_top = np.argsort(-out64, axis=1)
    agree = ref_top[:, 0] == out_top[:, 0]
    margin = ref64[np.arange(len(ref64)), ref_top[:, 0]] - ref64[np.arange(len(ref64)), ref_top[:, 1]]
    decisive = margin > allowed_rel * value_range
    k = min(5, ref64.shape[1])
    overlap = np.mean([len(set(r[:k]) & set(o[:k])) / k for r, o in zip(ref_top, out_top)])
    metrics = {"top1_agreement": float(agree.mean()), "top1_decisive": int(decisive.sum()), "top5_overlap": float(overlap)}
    reasons = []
    if decisive.any() and float(agree[decisive].mean()) < tol.min_top1:
        reasons.append(f"top-1 agreement {float(agree[decisive].mean()):.3f} < {tol.min_top1:g}")
    return metrics, reasons


def compare(ref64, out64, tol, noise=None, noise_cosine=None, image_size=None) -> dict:
    return elementwise.compare(ref64, out64, tol, NAME, True, agreement, noise, noise_cosine)


def agreement_text(metrics: dict) -> str | None:
    value = metrics.get("top1_agreement")
    return None if value is None else f"{value:.3f}"


def describe_rule(tol) -> str:
    return tol.describe()
