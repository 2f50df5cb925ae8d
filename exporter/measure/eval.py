"""Accuracy of runners on labelled inputs (streamed in batches)."""

from __future__ import annotations

import numpy as np

from exporter.runners.base import Runner


def predict(runner: Runner, inputs: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Top-1 class of every sample."""
    preds = []
    for start in range(0, len(inputs), batch_size):
        out = next(iter(runner.infer(inputs[start : start + batch_size]).values()))
        preds.append(out.argmax(axis=1))
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def accuracy(runner: Runner, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 128) -> float:
    return float((predict(runner, inputs, batch_size) == labels).mean())


def evaluate(
    runners: dict[str, Runner], source, batch_size: int = 32, top: int = 5, labels: tuple[str, ...] | None = None
) -> dict:
    """Top-1/top-k accuracy of every runner over a labelled Source, streamed in batches.

    The first runner is the reference: every other runner gets its agreement with it, its
    drop in points, and the most frequent (reference class -> artifact class) disagreements.
    """
    from collections import Counter

    names = list(runners)
    top1 = {n: 0 for n in names}
    topk = {n: 0 for n in names}
    agree = {n: 0 for n in names}
    confusions: dict[str, Counter] = {n: Counter() for n in names}
    total = 0
    for batch, truth in source.labelled_batches(batch_size):
        total += len(truth)
        reference_pred = None
        for name in names:
            out = next(iter(runners[name].infer(batch).values()))
            ranked = np.argsort(-out, axis=1)
            pred = ranked[:, 0]
            if reference_pred is None:
                reference_pred = pred
            top1[name] += int((pred == truth).sum())
            topk[name] += int((ranked[:, :top] == truth[:, None]).any(axis=1).sum())
            agree[name] += int((pred == reference_pred).sum())
            confusions[name].update(zip(reference_pred[pred != reference_pred].tolist(), pred[pred != reference_pred].tolist()))
    if total == 0:
        from exporter.errors import BadInputError

        raise BadInputError(f"{source.description} holds no labelled samples")

    def name_of(index: int) -> str:
        return labels[index] if labels and index < len(labels) else str(index)

    base = top1[names[0]] / total
    return {
        "samples": total,
        "source": source.description,
        "top": top,
        "results": {
            n: {
                "top1": top1[n] / total,
                f"top{top}": topk[n] / total,
                "agreement_with_reference": agree[n] / total,
                "top1_drop_points": round((base - top1[n] / total) * 100, 3),
                "disagreements": [
                    {"reference": name_of(a), "artifact": name_of(b), "count": c} for (a, b), c in confusions[n].most_common(5)
                ],
            }
            for n in names
        },
    }


def evaluate_targets(found: list, loaded, spec, data: str, batch_size: int = 32, top: int = 5, progress=lambda _: None) -> dict:
    """`cnnexport eval`: the reference (PyTorch when a checkpoint is among the targets) and every artifact found,
    judged by the task of the model's output (exporter/tasks/: top-1 / top-k, mIoU, mAP)."""
    from exporter import tasks
    from exporter.runners import open_runner
    from exporter.runners.torch import TorchRunner

    runners: dict[str, Runner] = {}
    if loaded is not None:
        runners["pytorch (reference)"] = TorchRunner(loaded.module)
    for t in found:
        if t.kind != "pytorch":
            runners[t.label] = open_runner(t.path, t.kind)
    return tasks.evaluate(runners, data, spec, batch_size, top, progress)
