"""The detect task: an artifact is judged by the boxes it finds, against the boxes PyTorch finds.

Two output layouts, as Ultralytics exports them:
  * raw head (N, 4 + classes, anchors): per anchor an xywh box in input pixels, then one sigmoid
    score per class (YOLOv8 / YOLO11);
  * end-to-end (N, max_det, 6): x1, y1, x2, y2, score, class per row (YOLO26, YOLOv10), no NMS.

Per input set the verifier
  1. decodes both outputs the same way: class-wise NMS with Ultralytics' predict defaults
     (confidence 0.25, IoU 0.7, at most 300 boxes per image);
  2. matches the artifact's boxes to the reference's greedily by score (same class, IoU >= 0.5)
     and reports matched-box F1, the mean IoU of matched boxes and their largest score difference;
     a box whose score is within the tie margin of the confidence threshold may appear on one side
     only and is not counted against the artifact (as pixel ties are for segmentation);
  3. judges the raw tensor per part in its own units, never with a range borrowed from another
     part: box coordinates against the image size, scores absolutely (an INT8 model that squeezed
     0..1 scores into the scale of 0..640 pixel boxes fails here even where no box is found).
Detection agreement needs boxes: with fewer than MIN_BOXES reference boxes (random inputs find
almost none) it is reported "not measured" and the per-part check decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.options import DetectOptions

NAME = "detect"
CLASS_PER_SAMPLE = False  # classes per box
FLOAT_HEAD = True  # its decoding (DFL, sigmoid, box arithmetic) stays in float in every INT8 stage (float_tail)
MODEL_NOUN = "detector"
DEMO = "exporter.demo_detect"  # `cnnexport demo --task detect`: a YOLO11n trained by Ultralytics on drawn shapes
EVAL = "exporter.tasks.detect_eval"  # `cnnexport eval`: mAP50 and mAP50-95 on labelled boxes
CONF = DetectOptions().conf  # Ultralytics' predict defaults (--conf, --iou; the recipe's verify.detect)
NMS_IOU = DetectOptions().iou
MAX_DET = 300
MATCH_IOU = 0.5  # a matched box: same class, IoU >= this with the reference's
MIN_BOXES = 5  # fewer reference boxes than this on an input set: agreement not measured


@dataclass(frozen=True)
class DetectRule:
    """One precision's detection thresholds (exporter/compare.py TOLERANCES holds one per precision)."""

    box_err: float  # max |box coordinate difference| / image size
    score_err: float  # max |score difference| (scores are 0..1)
    min_f1: float  # matched-box F1 against the reference's boxes
    min_iou: float  # mean IoU of the matched boxes
    tie_margin: float  # boxes scoring within this of the confidence threshold are not judged
    # box coordinates judged on every anchor, or only where the reference scores a box (an fp16 or INT8
    # head's background anchors regress boxes nobody keeps: the flat DFL distributions there amplify
    # rounding, 3 px at 128 px in an fp16 Core ML YOLO11n whose every kept box matched, IoU 0.998)
    boxes_of_every_anchor: bool = True
    conf: float = CONF  # decoding: the user's --conf and --iou
    nms_iou: float = NMS_IOU

    def describe(self) -> str:
        where = "" if self.boxes_of_every_anchor else " (anchors scoring > conf)"
        return (
            f"detections: box error{where} <= {self.box_err:g} x image size, score error <= {self.score_err:g}, "
            f"matched-box F1 >= {self.min_f1:g} and mean IoU >= {self.min_iou:g} (conf {self.conf:g}, NMS IoU {self.nms_iou:g}, "
            f"match IoU {MATCH_IOU:g}, boxes within {self.tie_margin:g} of conf not judged)"
        )


RULES = {
    "fp32": DetectRule(box_err=1e-4, score_err=1e-4, min_f1=0.99, min_iou=0.99, tie_margin=1e-3),
    "fp16": DetectRule(box_err=5e-3, score_err=1e-2, min_f1=0.95, min_iou=0.95, tie_margin=1e-2, boxes_of_every_anchor=False),
    "int8": DetectRule(box_err=0.1, score_err=0.3, min_f1=0.9, min_iou=0.8, tie_margin=0.05, boxes_of_every_anchor=False),
}


def recognises(shape: tuple[int, ...]) -> bool:
    return False  # a detect output is said so by its checkpoint's source or --task, never guessed from a shape


def is_end_to_end(shape: tuple[int, ...]) -> bool:
    """(N, K, 6) rows of x1, y1, x2, y2, score, class, rather than (N, 4 + classes, anchors)."""
    return len(shape) == 3 and shape[2] == 6 and shape[1] != 6


def classes_of(shape: tuple[int, ...]) -> int | None:
    """The class count a detect output's shape (with the batch) shows; None for end-to-end rows."""
    if len(shape) != 3:
        return None
    return None if is_end_to_end(shape) else shape[1] - 4


def check_shape(name: str, shape: tuple[int, ...]) -> str:
    """'' when ``shape`` is a detection output cnnexport can decode, else why not."""
    if len(shape) == 3 and (is_end_to_end(shape) or shape[1] > 4):
        return ""
    return (
        f"output {name!r} has shape {shape}; --task detect needs (N, 4 + classes, anchors) "
        "(YOLOv8/11 head) or (N, max_det, 6) (end-to-end head)"
    )


@dataclass
class Boxes:
    """One image's detections after decoding: xyxy boxes, scores, class indices."""

    xyxy: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def decode(
    output: np.ndarray,
    conf: float = CONF,
    iou: float = NMS_IOU,
    max_det: int = MAX_DET,
    multi_label: bool = False,
    clip: float | None = None,
) -> list[Boxes]:
    """Each image's boxes as Ultralytics' predict finds them (one label per anchor, class-wise NMS), or with
    ``multi_label`` as its val does (every class scoring above ``conf`` is a box: what its mAP counts);
    ``clip``: the image size boxes are clipped to after NMS, as Ultralytics clips what it returns."""
    out = np.asarray(output, dtype=np.float32)
    images = []
    for row in out:
        if is_end_to_end(out.shape):
            keep = row[:, 4] > conf
            xyxy, scores, classes = row[keep, :4], row[keep, 4], row[keep, 5].round().astype(np.int64)
        else:
            scores_all = row[4:].T  # (anchors, classes)
            if multi_label:
                anchors, classes = np.nonzero(scores_all > conf)
                scores = scores_all[anchors, classes]
            else:
                classes = scores_all.argmax(axis=1)
                scores = scores_all[np.arange(len(classes)), classes]
                anchors = np.nonzero(scores > conf)[0]
                scores, classes = scores[anchors], classes[anchors]
            xyxy = xywh_to_xyxy(row[:4].T[anchors])
            kept = _nms(xyxy, scores, classes, iou)[:max_det]
            xyxy, scores, classes = xyxy[kept], scores[kept], classes[kept]
        if clip is not None:
            xyxy = np.clip(xyxy, 0.0, clip)
        order = np.argsort(-scores, kind="stable")[:max_det]
        images.append(Boxes(xyxy[order], scores[order], classes[order]))
    return images


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], axis=-1)


def _nms(xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by class-wise NMS, best first (torchvision's batched_nms)."""
    if not len(scores):
        return np.zeros(0, np.int64)
    import torch
    from torchvision.ops import batched_nms

    kept = batched_nms(torch.from_numpy(xyxy), torch.from_numpy(scores), torch.from_numpy(classes), iou)
    return kept.numpy()


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (len(a), len(b)). Corners are put in order first: an undertrained head
    may regress x2 < x1, and such a box still equals itself."""
    a = np.concatenate([np.minimum(a[:, :2], a[:, 2:]), np.maximum(a[:, :2], a[:, 2:])], axis=1)
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


@dataclass
class Agreement:
    reference_boxes: int  # judged reference boxes (those clear of the tie margin, or matched)
    artifact_boxes: int
    matched: int
    ious: list[float]
    score_diffs: list[float]
    box_diffs: list[float]  # largest coordinate difference of each matched pair, in pixels

    @property
    def f1(self) -> float:
        total = self.reference_boxes + self.artifact_boxes
        return 1.0 if total == 0 else 2 * self.matched / total


def agreement(reference: list[Boxes], artifact: list[Boxes], tie_margin: float, conf: float = CONF) -> Agreement:
    """Greedy same-class matching by reference score; unmatched boxes within the tie margin of conf are not judged."""
    result = Agreement(0, 0, 0, [], [], [])
    for ref, art in zip(reference, artifact):
        ious = box_iou(ref.xyxy, art.xyxy)
        ious = np.where(ref.classes[:, None] == art.classes[None, :], ious, 0.0)
        taken = np.zeros(len(art.scores), bool)
        matched_ref = np.zeros(len(ref.scores), bool)
        for i in np.argsort(-ref.scores, kind="stable"):
            candidates = np.where(taken, -1.0, ious[i])
            j = int(candidates.argmax()) if len(candidates) else -1
            if j >= 0 and candidates[j] >= MATCH_IOU:
                taken[j] = matched_ref[i] = True
                result.ious.append(float(ious[i, j]))
                result.score_diffs.append(float(abs(ref.scores[i] - art.scores[j])))
                result.box_diffs.append(float(np.abs(ref.xyxy[i] - art.xyxy[j]).max()))
        near = conf + tie_margin
        result.matched += int(matched_ref.sum())
        result.reference_boxes += int(matched_ref.sum() + ((~matched_ref) & (ref.scores > near)).sum())
        result.artifact_boxes += int(taken.sum() + ((~taken) & (art.scores > near)).sum())
    return result


def part_errors(
    ref: np.ndarray, out: np.ndarray, image_size: float, every_anchor: bool = True, conf: float = CONF
) -> tuple[float, float]:
    """(max box error / image size, max score error) of the raw tensors, each part in its own units;
    boxes of every anchor, or of the anchors where the reference scores a box above ``conf``."""
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    if is_end_to_end(ref.shape):
        # rows are ranked by score, so a tiny change reorders them: compare each image's sorted scores;
        # boxes are judged through matching (compare)
        ref_scores = np.sort(ref[:, :, 4], axis=1)
        out_scores = np.sort(out[:, :, 4], axis=1)
        return 0.0, float(np.abs(ref_scores - out_scores).max()) if ref_scores.size else 0.0
    # boxes as users get them: corners clipped to the image (an undertrained head may regress a box several
    # times the image's size, whose width then differs by 30 px while the clipped box is the same)
    ref_xyxy = np.clip(xywh_to_xyxy(ref[:, :4].astype(np.float64).transpose(0, 2, 1)), 0.0, image_size)
    out_xyxy = np.clip(xywh_to_xyxy(out[:, :4].astype(np.float64).transpose(0, 2, 1)), 0.0, image_size)
    boxes = np.abs(out_xyxy - ref_xyxy).transpose(0, 2, 1)  # (N, 4, anchors)
    if not every_anchor:
        boxes = np.where((ref[:, 4:].max(axis=1) > conf)[:, None, :], boxes, 0.0)
    box = float(boxes.max()) / image_size if diff.size else 0.0
    score = float(diff[:, 4:].max()) if diff.size else 0.0
    return box, score


def row_set_distance(ref: np.ndarray, out: np.ndarray, conf: float) -> float:
    """The largest difference between the end-to-end rows scoring above ``conf``, order aside: each row against
    its nearest on the other side (a symmetric Hausdorff distance in the max norm), so two near-equal scores
    swapping places is no error, nor a different pick among the near-zero rows that fill the top k."""
    worst = 0.0
    for a, b in zip(ref.astype(np.float64), out.astype(np.float64)):
        a, b = a[a[:, 4] > conf], b[b[:, 4] > conf]
        if not len(a) or not len(b):
            worst = max(worst, float(np.abs(np.concatenate([a, b])[:, 4]).max())) if len(a) + len(b) else worst
            continue
        distance = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)
        worst = max(worst, float(distance.min(axis=1).max()), float(distance.min(axis=0).max()))
    return worst


def compare_boxes(ref: np.ndarray, out: np.ndarray, rule: DetectRule, image_size: float | None) -> dict:
    """The detect task's metrics and verdict for one input set (the Check fields plus status/reason)."""
    if not image_size:  # no spec: the reference boxes' own extent stands in for the image size
        boxes = ref[:, :, :4] if is_end_to_end(ref.shape) else ref[:, :4]
        image_size = max(float(np.ptp(boxes)) if boxes.size else 1.0, 1.0)
    size = float(image_size)
    box_err, score_err = part_errors(ref, out, size, rule.boxes_of_every_anchor, rule.conf)
    found = agreement(
        decode(ref, rule.conf, rule.nms_iou, clip=size),
        decode(out, rule.conf, rule.nms_iou, clip=size),
        rule.tie_margin,
        rule.conf,
    )
    end_to_end = is_end_to_end(ref.shape)
    if end_to_end and found.box_diffs:
        box_err = max(found.box_diffs) / size  # the boxes of matched rows: row order is not the artifact's to keep
    metrics: dict = {
        "task": "detect",
        "max_abs_err": row_set_distance(ref, out, rule.conf) if end_to_end else float(np.abs(out.astype(np.float64) - ref).max()),
        "box_err": box_err,
        "score_err": score_err,
        "max_channel_rel_err": max(box_err, score_err),
        "reference_boxes": found.reference_boxes,
    }
    reasons = []
    if box_err > rule.box_err:
        reasons.append(f"box error {box_err:.3g} x image size > {rule.box_err:g}")
    if score_err > rule.score_err:
        reasons.append(f"score error {score_err:.3g} > {rule.score_err:g}")
    if found.reference_boxes >= MIN_BOXES:
        metrics["f1"] = found.f1
        metrics["box_iou"] = float(np.mean(found.ious)) if found.ious else 0.0
        metrics["score_diff"] = max(found.score_diffs) if found.score_diffs else None
        if found.f1 < rule.min_f1:
            reasons.append(
                f"matched-box F1 {found.f1:.3f} < {rule.min_f1:g} ({found.matched} of {found.reference_boxes} reference "
                f"boxes found, {found.artifact_boxes} artifact boxes)"
            )
        if found.ious and metrics["box_iou"] < rule.min_iou:
            reasons.append(f"mean IoU of matched boxes {metrics['box_iou']:.3f} < {rule.min_iou:g}")
    metrics["status"] = "fail" if reasons else "pass"
    metrics["reason"] = "; ".join(reasons)
    return metrics


def compare(ref64, out64, tol, noise=None, noise_cosine=None, image_size=None) -> dict:
    """The task's comparison: boxes by the precision's DetectRule (``tol.detect``); the fp32 noise does not apply."""
    return compare_boxes(ref64, out64, tol.detect, image_size)


def describe_output(output) -> str:
    """What one output holds per sample, in words (Core ML's output descriptions)."""
    shape = "x".join(map(str, output.shape))
    if is_end_to_end((1, *output.shape)):
        return f"detections ({shape}: x1, y1, x2, y2, score, class per row)"
    return f"detections ({shape}: x, y, w, h and {output.classes} class scores per anchor)"


def agreement_text(metrics: dict) -> str | None:
    """Matched-box F1 and IoU, where the reference had enough boxes to measure them."""
    if metrics.get("box_err") is None:
        return None
    if metrics.get("f1") is None:
        return f"unmeasured ({metrics.get('reference_boxes') or 0} boxes)"
    iou = metrics.get("box_iou")
    return f"F1 {metrics['f1']:.3f}, IoU {'-' if iou is None else f'{iou:.3f}'}"


def describe_rule(tol) -> str:
    return tol.detect.describe()


def float_tail(graph, output_names: list[str]) -> list[str]:
    """The nodes that decode a detect head (DFL softmax and its 1x1 conv, sigmoid, box arithmetic, the concat of
    boxes and scores): everything between the outputs and the head's last trained convolutions.

    Static INT8 that quantizes these shares one scale between 0..640 pixel boxes and 0..1 scores and
    loses every box (Ultralytics PR #1695); kept in float they cost little (no weights, little compute).
    The walk goes back from each output and stops at a Conv with a bias (a trained layer); the DFL's
    Conv (fixed weights 0..15, no bias) is part of the decoding and stays in float too.
    """
    producers = {o: n for n in graph.node for o in n.output}
    tail: list[str] = []
    seen: set[str] = set()
    stack = [producers[o] for o in output_names if o in producers]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            continue  # a trained layer: quantized like the rest of the network
        tail.append(node.name)
        stack.extend(producers[i] for i in node.input if i in producers)
    return tail
