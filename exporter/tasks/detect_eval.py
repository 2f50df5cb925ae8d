"""mAP of detections against labelled boxes, computed by faster-coco-eval (COCO's evaluation, maintained).

Labelled data (``cnnexport eval --data``), read by ``read_dataset``:
  * an Ultralytics ``data.yaml``: its ``val`` images (a folder, a list of folders or a .txt of image
    paths; ``path`` relative to the yaml's folder), labels where Ultralytics looks for them (the last
    ``images`` folder of each path replaced by ``labels``, one ``class cx cy w h`` line per box, 0..1);
  * a folder with ``images/`` and ``labels/`` (or ``images/val`` and ``labels/val``), or holding a data.yaml;
  * COCO JSON annotations (``instances_val2017.json``): images looked for beside the file, in its parent
    and in the parent's folder named after the file (``val2017/``); categories map to the model's
    classes by name where every name is one of the model's labels, else in order of their ids.
Ground truth is mapped into the letterboxed input's pixels, where the model's boxes are; predictions
are decoded as Ultralytics' val decodes them (confidence 0.001, NMS IoU 0.7, at most 300 per image,
every class above the confidence a box of its own: with one label per anchor, as predict decodes,
mAP50 read 2.6 points above Ultralytics' val on a YOLOv8n; with its val's multiple labels 0.1 point).
Measured against Ultralytics' own val on the same images with ``rect=False`` (the square input the model
was exported for): mAP50 0.181 vs 0.179 (YOLOv8n), 0.082 vs 0.078 (YOLO26n). A YOLO26's val uses its
one-to-many head with NMS where the export (and so cnnexport's reference) uses the NMS-free one-to-one
head: 0.562 vs 0.524 on a better trained one, 0.524 vs 0.524 on the same head. By default its val
letterboxes each batch to a rectangle padded by half a stride more (160 px for 128 px square images), an
input an exported fixed-size model does not take; there a YOLO11n read 0.267 here vs 0.235 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import BackendUnavailable, BadInputError
from exporter.tasks.detect import Boxes, decode

VAL_CONF = 0.001  # Ultralytics' val defaults
VAL_IOU = 0.7
INSTALL = "pip install faster-coco-eval (cnnexport computes detection mAP with it)"


def to_letterbox(rows: np.ndarray, image_width: int, image_height: int, height: int, width: int) -> np.ndarray:
    """Rows of class, x1, y1, x2, y2 (, crowd) in the image's pixels -> in the letterboxed input's pixels
    (exporter/inputs.py letterbox: scale to fit, centred)."""
    r = min(height / image_height, width / image_width)
    left = round((width - round(image_width * r)) / 2 - 0.1)
    top = round((height - round(image_height * r)) / 2 - 0.1)
    out = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    out[:, [1, 3]] = out[:, [1, 3]] * r + left
    out[:, [2, 4]] = out[:, [2, 4]] * r + top
    return out


def yolo_labels(label_file: Path, image_width: int, image_height: int, height: int, width: int) -> np.ndarray:
    """(K, 5) rows of class, x1, y1, x2, y2 in the letterboxed input's pixels from a YOLO label file."""
    path = Path(label_file)
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        data = np.array([[float(v) for v in row[:5]] for row in lines]).reshape(-1, 5)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise BadInputError(f"label file {path} is not YOLO labels (class cx cy w h per line): {exc}") from None
    cx, cy, w, h = data[:, 1] * image_width, data[:, 2] * image_height, data[:, 3] * image_width, data[:, 4] * image_height
    pixels = np.stack([data[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return to_letterbox(pixels, image_width, image_height, height, width)


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
        for row in truth:
            cls, x1, y1, x2, y2 = row[:5]
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(cls),
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": int(row[5]) if len(row) > 5 else 0,
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


@dataclass
class LabelledImages:
    """Images and their boxes (in the image's own pixels, class-indexed as the model's outputs)."""

    images: list[Path]
    boxes: list[np.ndarray]  # per image (K, 5 or 6): class, x1, y1, x2, y2 (, crowd)
    description: str


def read_dataset(data: str | Path, classes: int) -> LabelledImages:
    """The labelled images of an Ultralytics data.yaml, an images/ + labels/ folder or COCO JSON annotations."""
    path = Path(data)
    if not path.exists():
        raise BadInputError(f"detection data {path} does not exist")
    if path.is_dir() and (path / "data.yaml").is_file():
        path = path / "data.yaml"
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yolo_yaml(path, classes)
    if path.suffix.lower() == ".json":
        return _coco_json(path, classes)
    if path.is_dir() and (path / "images").is_dir() and (path / "labels").is_dir():
        images = path / "images" / "val" if (path / "images" / "val").is_dir() else path / "images"
        return _yolo_images([images], f"{path.name}", classes)
    raise BadInputError(
        f"detection data {path} must be an Ultralytics data.yaml, a folder with images/ and labels/, or COCO JSON annotations"
    )


def _yolo_yaml(path: Path, classes: int) -> LabelledImages:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path} is not a readable data.yaml ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise BadInputError(f"{path} is not an Ultralytics data.yaml (a mapping with path, val and names)")
    names = spec.get("names")
    count = len(names) if isinstance(names, (dict, list)) else None
    if count is not None and count != classes:
        raise BadInputError(f"{path} names {count} classes but the model has {classes}")
    root = Path(str(spec.get("path") or "."))
    root = root if root.is_absolute() else path.parent / root
    split = spec.get("val") or spec.get("test")
    if not split:
        raise BadInputError(f"{path} names no val (or test) images")
    entries = split if isinstance(split, list) else [split]
    folders: list[Path] = []
    files: list[Path] = []
    for entry in entries:
        where = root / str(entry)
        if where.suffix == ".txt" and where.is_file():
            lines = [line.strip() for line in where.read_text().splitlines() if line.strip()]
            files += [(where.parent / line) if not Path(line).is_absolute() else Path(line) for line in lines]
        else:
            folders.append(where)
    return _yolo_images(folders, f"{path.name} val", classes, files)


def _label_of(image: Path) -> Path:
    """Where Ultralytics looks for an image's labels: the last 'images' folder of its path replaced by 'labels'."""
    parts = list(image.parts)
    at = max((i for i, part in enumerate(parts) if part == "images"), default=None)
    if at is None:
        return image.with_suffix(".txt")
    parts[at] = "labels"
    return Path(*parts).with_suffix(".txt")


def _yolo_images(folders: list[Path], name: str, classes: int, files: list[Path] | None = None) -> LabelledImages:
    from PIL import Image, UnidentifiedImageError

    from exporter.inputs import list_images

    images = list(files or []) + [image for folder in folders for image in list_images(folder)]
    boxes = []
    for image in images:
        try:
            with Image.open(image) as opened:
                width, height = opened.size
        except (UnidentifiedImageError, OSError) as exc:
            raise BadInputError(f"image {image} cannot be read ({exc})") from None
        rows = yolo_labels(_label_of(image), width, height, height, width)  # same size: the image's own pixels
        _check_classes(rows, classes, _label_of(image))
        boxes.append(rows)
    return LabelledImages(images, boxes, f"{name} ({len(images)} images, {sum(len(b) for b in boxes)} boxes)")


def _coco_json(path: Path, classes: int) -> LabelledImages:
    import json

    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        entries, annotations, categories = coco["images"], coco.get("annotations", []), coco.get("categories", [])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path} is not COCO annotations (images, annotations, categories): {exc}") from None
    if not entries:
        raise BadInputError(f"{path} lists no images")
    try:
        ids = sorted(int(c["id"]) for c in categories) or sorted({int(a["category_id"]) for a in annotations})
        if len(ids) != classes:
            raise BadInputError(f"{path} has {len(ids)} categories but the model has {classes} classes")
        index = {category: i for i, category in enumerate(ids)}
        boxes_of: dict[int, list] = {int(e["id"]): [] for e in entries}
        for a in annotations:
            x, y, w, h = (float(v) for v in a["bbox"])
            if int(a["category_id"]) not in index:
                raise BadInputError(
                    f"{path}: annotation {a.get('id')} has category {a['category_id']}, not one of its categories"
                )
            row = [index[int(a["category_id"])], x, y, x + w, y + h, int(a.get("iscrowd", 0))]
            boxes_of.setdefault(int(a["image_id"]), []).append(row)
        names = [str(e["file_name"]) for e in entries]
    except (KeyError, ValueError, TypeError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise BadInputError(f"{path} is not COCO annotations (images with id and file_name; bbox x, y, w, h): {what}") from None
    folders = [path.parent, path.parent.parent, path.parent.parent / path.stem.removeprefix("instances_")]
    images, boxes = [], []
    for entry, name in zip(entries, names):
        found = next((folder / name for folder in folders if (folder / name).is_file()), None)
        if found is None:
            raise BadInputError(f"image {name} of {path.name} is in none of: {', '.join(str(f) for f in folders)}")
        images.append(found)
        boxes.append(np.array(boxes_of[int(entry["id"])], dtype=np.float64).reshape(-1, 6))
    return LabelledImages(images, boxes, f"{path.name} ({len(images)} images, {sum(len(b) for b in boxes)} boxes)")


def _check_classes(rows: np.ndarray, classes: int, where: Path) -> None:
    if len(rows) and (rows[:, 0].max() >= classes or rows[:, 0].min() < 0):
        raise BadInputError(f"{where} holds class {int(rows[:, 0].max())}, but the model has {classes} classes")


def evaluate(runners: dict, images: np.ndarray, truths: list[np.ndarray], classes: int, output: str) -> dict:
    """{name: mAP} of each runner (PyTorch and every artifact) on the same letterboxed images."""
    results = {}
    for name, runner in runners.items():
        found = [box for i in range(0, len(images), 16) for box in _boxes(runner, images[i : i + 16], output)]
        results[name] = mean_average_precision(found, truths, classes)
    return results


def _boxes(runner, batch: np.ndarray, output: str) -> list[Boxes]:
    got = runner.infer(batch)
    value = got.get(output, next(iter(got.values())))  # by name; by position where an artifact renamed it
    return decode(value, conf=VAL_CONF, iou=VAL_IOU, multi_label=True, clip=float(max(batch.shape[-2:])))


def evaluate_output(runners: dict, data, spec, output, batch_size: int, top: int, progress) -> dict:
    """`cnnexport eval` of a detector (``output``: its detect OutputSpec), at most 16 images a batch."""
    return evaluate_data(runners, data, spec, output.name, min(batch_size, 16), progress)


def evaluate_data(runners: dict, data: str | Path, spec, output: str, batch_size: int = 16, progress=lambda _: None) -> dict:
    """`cnnexport eval` of a detector: mAP50 and mAP50-95 of every runner on labelled images, the first the reference."""
    from PIL import Image

    from exporter.inputs import load_image, normalize

    dataset = read_dataset(data, spec.num_classes)
    progress(f"evaluating {len(runners)} model(s) on {dataset.description}, output {output}")
    found: dict[str, list[Boxes]] = {name: [] for name in runners}
    truths = []
    for start in range(0, len(dataset.images), batch_size):
        paths = dataset.images[start : start + batch_size]
        batch = normalize(np.stack([load_image(p, spec) for p in paths]), spec)
        for path, rows in zip(paths, dataset.boxes[start : start + batch_size]):
            with Image.open(path) as opened:
                width, height = opened.size
            truths.append(to_letterbox(rows, width, height, spec.height, spec.width))
        for name, runner in runners.items():
            found[name] += _boxes(runner, batch, output)
    scores = {name: mean_average_precision(boxes, truths, spec.num_classes) for name, boxes in found.items()}
    base = next(iter(scores.values()))
    return {
        "task": "detect",
        "source": dataset.description,
        "samples": len(dataset.images),
        "decoding": {"conf": VAL_CONF, "iou": VAL_IOU, "multi_label": True, "max_det": 300},
        "results": {
            name: {
                "map50": s["map50"],
                "map50_95": s["map50_95"],
                "map50_drop_points": None
                if s["map50"] is None or base["map50"] is None
                else round((base["map50"] - s["map50"]) * 100, 3),
            }
            for name, s in scores.items()
        },
    }


def render(report: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"detection accuracy on {escape(report['source'])}", title_justify="left")
    for column in ("model", "mAP50", "mAP50-95", "mAP50 vs reference"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for i, (name, r) in enumerate(report["results"].items()):
        table.add_row(
            escape(name),
            "-" if r["map50"] is None else f"{r['map50']:.3f}",
            "-" if r["map50_95"] is None else f"{r['map50_95']:.3f}",
            "-" if i == 0 or r["map50_drop_points"] is None else f"{-r['map50_drop_points'] + 0.0:+.2f} pts",
        )
    console.print(table)
