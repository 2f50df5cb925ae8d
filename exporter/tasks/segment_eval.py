"""Segmentation data and accuracy: image + mask pairs -> mIoU and pixel accuracy per runner.

Data (``cnnexport eval --data``):
  * a folder with ``images/`` and ``masks/`` sub-folders holding files of the same stem
    (``images/cat1.jpg`` + ``masks/cat1.png``); a mask is a PNG of class indices (palette or grey),
    255 = ignored (Pascal VOC's border);
  * an ``.npz`` with ``images`` (N, C, H, W float, already normalized) and ``masks`` (N, H, W ints).
Images are resized to the model's H x W (bilinear), masks with nearest neighbour, so every
pixel keeps its class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.errors import BadInputError

IGNORE_INDEX = 255


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts of (truth, prediction), ignoring IGNORE_INDEX pixels."""
    keep = truth != IGNORE_INDEX
    t, p = truth[keep].astype(np.int64), pred[keep].astype(np.int64)
    if t.size and (t.max() >= num_classes or t.min() < 0):
        raise BadInputError(
            f"the masks hold class {int(t.max())}, but the model has {num_classes} classes "
            f"(use {IGNORE_INDEX} for pixels to ignore)"
        )
    return np.bincount(t * num_classes + np.clip(p, 0, num_classes - 1), minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def scores(matrix: np.ndarray) -> dict:
    """Pixel accuracy and mean IoU over the classes present in the truth or the predictions."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    total = matrix.sum()
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "miou": float((tp[present] / union[present]).mean()) if present.any() else 0.0,
        "iou_per_class": [round(float(v), 4) if p else None for v, p in zip(tp / np.maximum(union, 1), present)],
    }


def class_map(runner, batch: np.ndarray, output: str | None) -> np.ndarray:
    """The argmax over axis 1 of the runner's segmentation output (``output`` by name, else the first)."""
    outputs = runner.infer(batch)
    value = outputs.get(output) if output in outputs else next(iter(outputs.values()))
    value = np.asarray(value)
    if value.ndim != 4:
        raise BadInputError(f"the model's output has shape {value.shape}, not (N, C, H, W) class maps")
    return value.argmax(axis=1)


def evaluate(
    runners: dict,
    images: np.ndarray,
    masks: np.ndarray,
    num_classes: int,
    output: str | None = None,
    batch_size: int = 8,
    description: str = "",
) -> dict:
    """mIoU and pixel accuracy of every runner; the first is the reference (agreement and drop against it)."""
    names = list(runners)
    matrices = {n: np.zeros((num_classes, num_classes), np.int64) for n in names}
    agree = {n: 0 for n in names}
    pixels = 0
    for start in range(0, len(images), batch_size):
        batch, truth = images[start : start + batch_size], masks[start : start + batch_size]
        reference = None
        for name in names:
            pred = class_map(runners[name], batch, output)
            if pred.shape != truth.shape:
                raise BadInputError(f"{name} predicts {pred.shape[1:]} maps but the masks are {truth.shape[1:]}")
            reference = pred if reference is None else reference
            matrices[name] += confusion(pred, truth, num_classes)
            agree[name] += int((pred == reference).sum())
        pixels += truth.size
    if pixels == 0:
        raise BadInputError(f"{description or 'the data'} holds no image + mask pairs")
    base = scores(matrices[names[0]])
    results = {}
    for name in names:
        s = scores(matrices[name])
        s["pixel_agreement_with_reference"] = agree[name] / pixels
        s["miou_drop_points"] = round((base["miou"] - s["miou"]) * 100, 3)
        results[name] = s
    return {"task": "segment", "samples": int(len(images)), "source": description, "classes": num_classes, "results": results}


def evaluate_output(runners: dict, data, spec, output, batch_size: int, top: int, progress) -> dict:
    """`cnnexport eval` of a segmenter: mIoU and pixel accuracy of every runner on image + mask pairs."""
    images, masks, description = read_pairs(data, spec)
    progress(f"evaluating {len(runners)} model(s) on {description}, output {output.name}")
    return evaluate(runners, images, masks, output.classes, output.name, batch_size, description)


def read_pairs(data: str | Path, spec) -> tuple[np.ndarray, np.ndarray, str]:
    """(normalized NCHW images, (N, H, W) masks, a description) from a folder of pairs or an .npz."""
    path = Path(data)
    if not path.exists():
        raise BadInputError(f"segmentation data {path} does not exist")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files or "masks" not in npz.files:
                raise BadInputError(
                    f"{path} needs arrays 'images' (N, C, H, W, normalized) and 'masks' (N, H, W); it has {', '.join(npz.files)}"
                )
            images, masks = np.asarray(npz["images"], np.float32), np.asarray(npz["masks"])
        if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
            raise BadInputError(
                f"{path}: images {images.shape} and masks {masks.shape} do not pair up as (N, C, H, W) and (N, H, W)"
            )
        return images, masks.astype(np.int64), f"{path.name} ({len(images)} image + mask pairs)"
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        raise BadInputError(f"segmentation data {path} must be an .npz (images, masks) or a folder with images/ and masks/")
    from exporter.inputs import IMAGE_SUFFIXES, normalize

    image_files = sorted(p for p in (path / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    mask_files = {p.stem: p for p in (path / "masks").iterdir() if p.suffix.lower() == ".png"}
    missing = [p.name for p in image_files if p.stem not in mask_files]
    if missing:
        raise BadInputError(
            f"{len(missing)} image(s) in {path / 'images'} have no mask PNG of the same name (first: {missing[0]})"
        )
    if not image_files:
        raise BadInputError(f"{path / 'images'} holds no images")
    pixels, labels = zip(*(_load_pair(p, mask_files[p.stem], spec) for p in image_files))
    return normalize(np.stack(pixels), spec), np.stack(labels), f"{path.name} ({len(image_files)} image + mask pairs)"


def _load_pair(image: Path, mask: Path, spec) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    size = (spec.width, spec.height)
    try:
        with Image.open(image) as img:
            picture = (
                np.asarray(img.convert("L" if spec.channels == 1 else "RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
                / 255.0
            )
        with Image.open(mask) as m:
            if m.mode not in ("P", "L", "I", "I;16"):
                raise BadInputError(
                    f"mask {mask} is a {m.mode} image; a mask holds one class index per pixel (palette or grey PNG)"
                )
            classes = np.asarray(m.resize(size, Image.Resampling.NEAREST), np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"cannot read {image.name} / {mask.name}: {exc}") from None
    picture = picture[None] if picture.ndim == 2 else picture.transpose(2, 0, 1)
    return picture, classes


def render(report: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"segmentation accuracy on {report['source']}", title_justify="left")
    for column in ("model", "mIoU", "pixel accuracy", "pixels as reference", "mIoU vs reference"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for i, (name, r) in enumerate(report["results"].items()):
        table.add_row(
            escape(name),
            f"{r['miou'] * 100:.2f}%",
            f"{r['pixel_accuracy'] * 100:.2f}%",
            f"{r['pixel_agreement_with_reference'] * 100:.2f}%",
            "-" if i == 0 else f"{-r['miou_drop_points']:+.2f} pts",
        )
    console.print(table)
