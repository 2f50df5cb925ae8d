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
    """`cnnexport eval`: the reference (PyTorch when a checkpoint is among the targets) and every artifact found.

    A classifier is judged by top-1/top-k on labelled images; a segmentation model (its spec has a
    segment output) by mIoU and pixel accuracy on image + mask pairs; a detector (a detect output) by
    mAP50 and mAP50-95 on labelled boxes."""
    from exporter.inputs import open_source
    from exporter.runners import open_runner
    from exporter.runners.torch import TorchRunner

    runners: dict[str, Runner] = {}
    if loaded is not None:
        runners["pytorch (reference)"] = TorchRunner(loaded.module)
    for t in found:
        if t.kind != "pytorch":
            runners[t.label] = open_runner(t.path, t.kind)
    detections = next((o for o in spec.outputs if o.task == "detect"), None)
    if detections is not None:  # boxes: labelled images, mAP50 and mAP50-95 (exporter/tasks/detect_eval.py)
        from exporter.tasks import detect_eval

        return detect_eval.evaluate_data(runners, data, spec, detections.name, min(batch_size, 16), progress)
    segment = next((o for o in spec.outputs if o.task == "segment"), None)
    if segment is not None:  # class maps: image + mask pairs, mIoU and pixel accuracy (exporter/segmentation.py)
        from exporter import segmentation

        images, masks, description = segmentation.read_pairs(data, spec)
        progress(f"evaluating {len(runners)} model(s) on {description}, output {segment.name}")
        return segmentation.evaluate(runners, images, masks, segment.classes, segment.name, batch_size, description)
    source = open_source(data, spec, split="test")
    progress(f"evaluating {len(runners)} model(s) on {source.description}")
    return evaluate(runners, source, batch_size, min(top, spec.num_classes), spec.labels)
