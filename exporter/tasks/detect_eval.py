"""mAP of detections against labelled boxes, computed by faster-coco-eval (COCO's evaluation, maintained).

Ground truth comes as YOLO label files (`class cx cy w h`, 0..1 of the image) and is mapped into the
letterboxed input's pixels, where the model's boxes are; predictions are decoded as Ultralytics'
val decodes them (confidence 0.001, NMS IoU 0.7, at most 300 per image, every class above the confidence
a box of its own: with one label per anchor, as predict decodes, mAP50 read 2.6 points above Ultralytics' val
on a YOLOv8n; with its val's multiple labels 0.1 point).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.errors import BackendUnavailable
from exporter.tasks.detect import Boxes, decode

VAL_CONF = 0.001  # Ultralytics' val defaults
VAL_IOU = 0.7
INSTALL = "pip install faster-coco-eval (cnnexport computes detection mAP with it)"


def yolo_labels(label_file: Path, image_width: int, image_height: int, height: int, width: int) -> np.ndarray:
    """(K, 5) rows of class, x1, y1, x2, y2 in the letterboxed input's pixels (exporter/inputs.py letterbox)."""
    rows = (
        [line.split() for line in Path(label_file).read_text().splitlines() if line.strip()] if Path(label_file).exists() else []
    )
    if not rows:
        return np.zeros((0, 5))
    data = np.array([[float(v) for v in row[:5]] for row in rows])
    r = min(height / image_height, width / image_width)
    left = round((width - round(image_width * r)) / 2 - 0.1)
    top = round((height - round(image_height * r)) / 2 - 0.1)
    cx, cy = data[:, 1] * image_width * r + left, data[:, 2] * image_height * r + top
    w, h = data[:, 3] * image_width * r, data[:, 4] * image_height * r
    return np.stack([data[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def mean_average_precision(predictions: list[Boxes], truths: list[np.ndarray], classes: int) -> dict:
    """{"map50": AP at IoU 0.5, "map50_95": AP averaged over IoU 0.5:0.95} over the images."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster  # type: ignore[import-untyped]
    except ImportError:
        raise BackendUnavailable(f"detection mAP needs faster-coco-eval: {INSTALL}") from None
    images: list[dict] = []
    annotations: list[dict] = []
    results: list[dict] = []
    for index, (found, truth) in enumerate(zip(predictions, truths)):
        images.append({"id": index, "width": 1, "height": 1})
        for cls, x1, y1, x2, y2 in truth:
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(cls),
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for (x1, y1, x2, y2), score, cls in zip(found.xyxy.tolist(), found.scores.tolist(), found.classes.tolist()):
            results.append({"image_id": index, "category_id": int(cls), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    if not annotations:
        return {"map50": None, "map50_95": None}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in range(classes)]}
    gt.createIndex()
    if not results:
        return {"map50": 0.0, "map50_95": 0.0}
    evaluation = COCOeval_faster(gt, gt.loadRes(results), "bbox", print_function=lambda *_: None)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {"map50": float(evaluation.stats[1]), "map50_95": float(evaluation.stats[0])}


def evaluate(runners: dict, images: np.ndarray, truths: list[np.ndarray], classes: int, output: str) -> dict:
    """{name: mAP} of each runner (PyTorch and every artifact) on the same letterboxed images."""
    results = {}
    for name, runner in runners.items():
        outs = []
        for i in range(0, len(images), 16):
            got = runner.infer(images[i : i + 16])
            outs.append(got.get(output, next(iter(got.values()))))  # by name; by position where an artifact renamed it
        found = decode(np.concatenate(outs), conf=VAL_CONF, iou=VAL_IOU, multi_label=True)
        results[name] = mean_average_precision(found, truths, classes)
    return results
