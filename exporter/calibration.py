"""Calibration and evaluation data: image folders, preprocessed arrays, or the demo digits.

A source is a list of sample indices over some storage; it can be iterated any number of
times in batches (onnxruntime's CalibrationDataReader is exhausted after one pass, so the
reader below wraps a source and rewinds it). Images are decoded batch by batch, never all
at once.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from exporter.data import IMAGE_SUFFIXES, normalize
from exporter.errors import BadInputError
from exporter.spec import ModelSpec

DIGITS = "digits"


def digits_arrays(spec: ModelSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as (train_x, train_y, test_x, test_y), a seeded 80/20 split.

    8x8 grey images are upsampled to the spec's HxW (and repeated to 3 channels if needed),
    scaled to [0, 1] and normalized with the spec.
    """
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    pixels = torch.nn.functional.interpolate(pixels, size=(spec.height, spec.width), mode="bilinear", align_corners=False)
    pixels = pixels.clamp(0, 1).repeat(1, spec.channels, 1, 1).numpy()
    x = normalize(pixels, spec)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(len(x) * 0.8)
    return x[order[:split]], y[order[:split]], x[order[split:]], y[order[split:]]


@dataclass
class Source:
    """Samples ``indices`` of a storage: an array (N, C, H, W) or a list of image files."""

    description: str
    spec: ModelSpec
    indices: np.ndarray
    array: np.ndarray | None = None
    files: list[Path] | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, start: int, stop: int, what: str) -> "Source":
        return Source(f"{self.description} [{what}]", self.spec, self.indices[start:stop], self.array, self.files, self.labels)

    def batches(self, batch_size: int = 32) -> Iterator[np.ndarray]:
        for start in range(0, len(self.indices), batch_size):
            yield self._load(self.indices[start : start + batch_size])

    def labelled_batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.labels is None:
            raise BadInputError(f"{self.description} has no labels; use an ImageFolder (one sub-folder per class) or an .npz with 'labels'")
        for start in range(0, len(self.indices), batch_size):
            idx = self.indices[start : start + batch_size]
            yield self._load(idx), self.labels[idx]

    def take(self, limit: int | None = None) -> np.ndarray:
        """All (or the first ``limit``) samples as one array: only for small verification sets."""
        idx = self.indices[:limit] if limit else self.indices
        return self._load(idx)

    def _load(self, idx: np.ndarray) -> np.ndarray:
        if self.array is not None:
            batch = np.ascontiguousarray(self.array[np.sort(idx)] if isinstance(self.array, np.memmap) else self.array[idx], dtype=np.float32)
            if not np.isfinite(batch).all():  # checked batch by batch: a large .npy is never read whole for this
                raise BadInputError(f"{self.description} holds NaN or infinite values; inputs must be finite, normalized floats")
            return batch
        return normalize(np.stack([load_image_strict(self.files[i], self.spec) for i in idx]), self.spec)


def load_image_strict(path: Path, spec: ModelSpec) -> np.ndarray:
    """Like data.load_image, but a grey picture for a colour model (or the reverse) is an error."""
    from PIL import Image, UnidentifiedImageError

    from exporter.data import load_image

    try:
        with Image.open(path) as img:
            mode = img.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"image {path} cannot be read ({exc})") from None
    grey = mode in ("1", "L", "LA", "I", "I;16", "F")
    if spec.channels == 3 and grey:
        raise BadInputError(f"image {path} is greyscale but the model takes 3-channel colour images; convert the data set to RGB")
    if spec.channels == 1 and not grey:
        raise BadInputError(f"image {path} is colour ({mode}) but the model takes 1-channel images; convert the data set to greyscale")
    return load_image(path, spec)


def _image_files(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    if not folder.is_dir():
        raise BadInputError(f"calibration/evaluation folder {folder} does not exist")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInputError(f"{folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if classes and all(f.parent != folder for f in files):
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[f.relative_to(folder).parts[0]] for f in files], dtype=np.int64)
        return files, labels, classes
    return files, None, None


def _array(path: Path, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                key = "inputs" if "inputs" in data.files else data.files[0]
                array = data[key]
                labels = data["labels"] if "labels" in data.files else None
        else:
            array, labels = np.load(path, mmap_mode="r", allow_pickle=False), None
    except (OSError, ValueError, IndexError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{path} is not a readable .npy/.npz array ({exc})") from None
    if array.ndim != 4 or tuple(array.shape[1:]) != spec.input_shape:
        raise BadInputError(
            f"{path} holds an array of shape {tuple(array.shape)}; expected (N, {', '.join(map(str, spec.input_shape))}), "
            "already normalized with the model's mean/std"
        )
    if len(array) == 0:
        raise BadInputError(f"{path} holds no samples")
    if not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(f"{path} holds {array.dtype} values; expected normalized float inputs")
    if labels is not None and len(labels) != len(array):
        raise BadInputError(f"{path} has {len(labels)} labels for {len(array)} inputs")
    return array, labels


def open_source(where: str | Path, spec: ModelSpec, seed: int = 0, split: str = "train") -> Source:
    """A shuffled (seeded) source: 'digits', a folder of images (flat or ImageFolder), or .npy/.npz."""
    rng = np.random.default_rng(seed)
    if str(where) == DIGITS:
        train_x, train_y, test_x, test_y = digits_arrays(spec)
        x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
        return Source(f"demo digits ({split})", spec, rng.permutation(len(x)), array=x, labels=y)
    path = Path(where)
    if not path.exists():
        raise BadInputError(f"calibration/evaluation data {path} does not exist")
    if path.is_dir():
        files, labels, classes = _image_files(path)
        kind = f"ImageFolder, {len(classes)} classes" if classes else "image folder"
        return Source(f"{path} ({kind})", spec, rng.permutation(len(files)), files=files, labels=labels)
    if path.suffix.lower() in (".npy", ".npz"):
        array, labels = _array(path, spec)
        return Source(str(path), spec, rng.permutation(len(array)), array=array, labels=labels)
    raise BadInputError(f"{path} is neither a folder of images nor a .npy/.npz array (or 'digits')")


def calibration_split(source: Source, samples: int, holdout: int) -> tuple[Source, Source | None]:
    """First ``samples`` for calibration, the next ``holdout`` (distinct) for verification."""
    if samples < 1:
        raise BadInputError("--samples must be at least 1")
    n = len(source)
    calib_n = min(samples, n)
    held_n = min(holdout, n - calib_n)
    if held_n < holdout and n > 1:
        # a small set: keep a quarter for verification rather than verifying on calibration data
        held_n = max(1, min(holdout, n // 4))
        calib_n = min(calib_n, n - held_n)
    calib = source.subset(0, calib_n, f"{calib_n} calibration samples")
    held = source.subset(calib_n, calib_n + held_n, f"{held_n} held-out samples") if held_n > 0 else None
    return calib, held


class OrtCalibrationReader:
    """onnxruntime CalibrationDataReader over a Source; rewindable."""

    def __init__(self, source: Source, input_name: str, batch_size: int = 16):
        self.source, self.input_name, self.batch_size = source, input_name, batch_size
        self.batches_read = 0
        self.rewind()

    def get_next(self):
        batch = next(self._iter, None)
        if batch is None:
            return None
        self.batches_read += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = self.source.batches(self.batch_size)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read only batches [start, end): onnxruntime's strided calibration bounds memory this way."""
        start, stop = start_index * self.batch_size, end_index * self.batch_size
        self._iter = self.source.subset(start, stop, "chunk").batches(self.batch_size)

    def __len__(self) -> int:
        return -(-len(self.source) // self.batch_size)

    def stride(self, most: int = 4) -> int:
        """Batches per calibration chunk: a divisor of the batch count, as onnxruntime requires."""
        n = len(self)
        return max(d for d in range(1, min(most, n) + 1) if n % d == 0)
