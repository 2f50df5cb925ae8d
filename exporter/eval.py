"""Accuracy of a runner on labelled inputs (streamed in batches)."""

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
