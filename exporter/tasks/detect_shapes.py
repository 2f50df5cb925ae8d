"""A small detection data set drawn here (no download): circles, squares and triangles on noise, in
Ultralytics' layout (images/ + labels/ with one `class cx cy w h` line per box, and data.yaml)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "triangle")


def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One RGB uint8 image with 1-3 shapes, and its boxes as (class, cx, cy, w, h) in 0..1."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = rng.normal(115, 30, (size, size, 3))
    boxes = []
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(0, 3))
        r = rng.uniform(size * 0.08, size * 0.2)
        cx, cy = rng.uniform(r, size - r, 2)
        if kind == 0:
            region = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif kind == 1:
            region = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        else:  # upright: apex at the top, base at the bottom
            region = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        image[region] = rng.integers(0, 256, 3)
        boxes.append((kind, cx / size, cy / size, 2 * r / size, 2 * r / size))
    return np.clip(image, 0, 255).astype(np.uint8), boxes


def write_dataset(root: Path, train: int, val: int, size: int = 160, seed: int = 0) -> Path:
    """Write images/{train,val} and labels/{train,val} under ``root``; returns its data.yaml."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, boxes = draw(rng, size)
            Image.fromarray(image).save(root / "images" / split / f"{i:04d}.png")
            lines = [f"{k} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for k, cx, cy, w, h in boxes]
            (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASSES))
    data = root / "data.yaml"
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data


def train_yolo(data: Path, out: Path, model: str = "yolo11n.yaml", epochs: int = 20, size: int = 160) -> Path:
    """Train an Ultralytics YOLO on ``data`` on the CPU, from scratch (no download); returns its best.pt.

    SGD at lr 0.05 without mosaic learns these shapes in a few epochs (mAP50 0.41 after 20 epochs of
    96 images, 82 s on 2 cores); Ultralytics' defaults need far more epochs on so few images.
    """
    import contextlib
    import io
    import logging

    from ultralytics import YOLO

    from exporter.sources.ultralytics import restore_pil_open

    restore_pil_open()  # Ultralytics patched PIL on import
    log = Path(out) / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    logger = logging.getLogger("ultralytics")  # its progress bars and tables: into train.log, not the terminal
    saved = logger.handlers[:]
    logger.handlers = [handler]
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            YOLO(model).train(
                data=str(data), epochs=epochs, imgsz=size, batch=8, device="cpu", workers=0, plots=False, amp=False,
                project=str(Path(out).resolve()), name="train", exist_ok=True, verbose=False, seed=0, deterministic=True,
                optimizer="SGD", lr0=0.05, warmup_epochs=1, mosaic=0.0, close_mosaic=0, val=False,
            )  # fmt: skip
    finally:
        logger.handlers = saved
        log.write_text(captured.getvalue())
        restore_pil_open()
    return Path(out) / "train" / "weights" / "best.pt"
