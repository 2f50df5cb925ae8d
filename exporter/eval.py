"""Accuracy of runners on labelled inputs (streamed in batches)."""

from __future__ import annotations

import numpy as np


def predict(runner, inputs: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Top-1 class of every sample."""
    preds = []
    for start in range(0, len(inputs), batch_size):
        out = next(iter(runner.infer(inputs[start : start + batch_size]).values()))
        preds.append(out.argmax(axis=1))
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def accuracy(runner, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 128) -> float:
    return float((predict(runner, inputs, batch_size) == labels).mean())


def evaluate(runners: dict, source, batch_size: int = 32, top: int = 5) -> dict:
    """Top-1/top-k accuracy of every runner over a labelled Source, and agreement with the first.

    The first runner is the reference; each other runner gets its drop in points.
    """
    names = list(runners)
    top1 = {n: 0 for n in names}
    topk = {n: 0 for n in names}
    agree = {n: 0 for n in names}
    total = 0
    for batch, labels in source.labelled_batches(batch_size):
        total += len(labels)
        reference_pred = None
        for name in names:
            out = next(iter(runners[name].infer(batch).values()))
            ranked = np.argsort(-out, axis=1)
            pred = ranked[:, 0]
            if reference_pred is None:
                reference_pred = pred
            top1[name] += int((pred == labels).sum())
            topk[name] += int((ranked[:, :top] == labels[:, None]).any(axis=1).sum())
            agree[name] += int((pred == reference_pred).sum())
    base = top1[names[0]] / total
    return {
        "samples": total,
        "source": source.description,
        "results": {
            n: {
                "top1": top1[n] / total,
                f"top{top}": topk[n] / total,
                "agreement_with_reference": agree[n] / total,
                "top1_drop_points": round((base - top1[n] / total) * 100, 3),
            }
            for n in names
        },
    }
