"""Model inputs: random, image folders, preprocessed arrays, the demo digits.

One re-iterable input source feeds calibration, verification and evaluation: a ``Source`` is
a list of sample indices over a storage (an (N, C, H, W) array or a list of image files). It
can be iterated any number of times in batches (onnxruntime's CalibrationDataReader is
exhausted after one pass, so the reader below wraps a source and rewinds it), and yields
float32 NCHW batches already normalized with the model's spec. Images are decoded batch by
batch, never all at once; a large .npy is memory-mapped.

One reader each: ``read_array`` (.npy/.npz), ``image_folder`` (flat or ImageFolder),
``load_image`` (strict about grey/colour for calibration and evaluation data).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from exporter.errors import BadInputError
from exporter.spec import ModelSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
ARRAY_SUFFIXES = (".npy", ".npz")
DIGITS = "digits"
VERIFY_IMAGES, VERIFY_SAMPLES = 16, 64  # the --images verification set: first images / array samples


@dataclass(frozen=True)
class InputSet:
    """A named batch of model inputs (normalized, NCHW float32)."""

    name: str
    array: np.ndarray
    judged: bool = True  # False: only run/shape/finite are checked (e.g. random noise for an int8 model)

    @property
    def batch_size(self) -> int:
        return int(self.array.shape[0])


def normalize(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """pixels in [0, 1], NCHW -> (pixels - mean) / std, float32."""
    mean = np.asarray(spec.channel_mean(), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.channel_std(), dtype=np.float32).reshape(1, -1, 1, 1)
    return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)


def random_inputs(spec: ModelSpec, batch_size: int, seed: int) -> InputSet:
    """Seeded pixels uniform in [0, 1], normalized: the model's real input range."""
    rng = np.random.default_rng(seed + batch_size)
    pixels = rng.random((batch_size, *spec.input_shape), dtype=np.float32)
    return InputSet(f"random b={batch_size}", normalize(pixels, spec))


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
    images = pixels.clamp(0, 1).repeat(1, spec.channels, 1, 1).numpy()
    x = normalize(images, spec)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(len(x) * 0.8)
    return x[order[:split]], y[order[:split]], x[order[split:]], y[order[split:]]


# --------------------------------------------------------------------------- storage readers


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted."""
    folder = Path(folder)
    if not folder.exists():
        raise BadInputError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInputError(f"image folder {folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def image_folder(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    """(files, labels, classes): labelled when every image sits in a class sub-folder (ImageFolder)."""
    folder = Path(folder)
    files = list_images(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes and all(f.parent != folder for f in files):
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[f.relative_to(folder).parts[0]] for f in files], dtype=np.int64)
        return files, labels, classes
    return files, None, None


def load_image(path: Path, spec: ModelSpec, strict: bool = False) -> np.ndarray:
    """Resize the short side to H/0.875, centre-crop HxW, scale to [0, 1]; returns CHW.

    ``strict``: a grey picture for a colour model (or the reverse) is an error instead of
    being converted (calibration and evaluation data must look like what the model sees).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            if strict:
                _check_colour(path, opened.mode, spec)
            img = opened.convert("L" if spec.channels == 1 else "RGB")
            if spec.resize == "letterbox":
                arr = letterbox(np.asarray(img), spec.height, spec.width).astype(np.float32) / 255.0
                return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            scale = max(spec.height, spec.width) / 0.875 / min(img.size)
            new_size = (max(spec.width, round(img.size[0] * scale)), max(spec.height, round(img.size[1] * scale)))
            img = img.resize(new_size, Image.Resampling.BILINEAR)
            left = (img.size[0] - spec.width) // 2
            top = (img.size[1] - spec.height) // 2
            img = img.crop((left, top, left + spec.width, top + spec.height))
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"image {path} cannot be read ({exc})") from None
    if spec.channels not in (1, 3):
        raise BadInputError(f"images can feed 1- or 3-channel models only; this model takes {spec.channels} channels")
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


LETTERBOX_GREY = 114


def letterbox(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Ultralytics' LetterBox (centred, no stride rounding): scale to fit, linear interpolation (OpenCV's
    INTER_LINEAR where OpenCV imports, as Ultralytics resizes; PIL's bilinear otherwise), pad with grey 114."""
    h, w = pixels.shape[:2]
    r = min(height / h, width / w)
    new_w, new_h = round(w * r), round(h * r)
    if (new_w, new_h) != (w, h):
        try:
            import cv2

            pixels = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        except ImportError:
            from PIL import Image

            pixels = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BILINEAR))
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    out = np.full((height, width, *pixels.shape[2:]), LETTERBOX_GREY, dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = pixels
    return out


def _check_colour(path: Path, mode: str, spec: ModelSpec) -> None:
    grey = mode in ("1", "L", "LA", "I", "I;16", "F")
    if spec.channels == 3 and grey:
        raise BadInputError(f"image {path} is greyscale but the model takes 3-channel colour images; convert the data set to RGB")
    if spec.channels == 1 and not grey:
        raise BadInputError(
            f"image {path} is colour ({mode}) but the model takes 1-channel images; convert the data set to greyscale"
        )


def read_array(path: Path, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, labels or None) of a .npy (memory-mapped) or .npz ('inputs' or its first array, 'labels').

    The inputs must already be normalized with the model's mean/std, shaped (N, C, H, W).
    """
    path = Path(path)
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if not data.files:
                    array = labels = None
                else:
                    array = data["inputs" if "inputs" in data.files else data.files[0]]
                    labels = data["labels"] if "labels" in data.files else None
        else:
            array, labels = data, None
    except (OSError, ValueError, IndexError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{path} is not a readable .npy/.npz array ({exc})") from None
    if array is None:
        raise BadInputError(f"{path} is not a readable .npy/.npz array (no arrays inside)")
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


# --------------------------------------------------------------------------- the source


@dataclass
class Source:
    """Samples ``indices`` of a storage: an array (N, C, H, W) or a list of image files."""

    description: str
    spec: ModelSpec
    indices: np.ndarray
    array: np.ndarray | None = None
    files: list[Path] | None = None
    labels: np.ndarray | None = None
    strict: bool = True  # images: a grey picture for a colour model (or the reverse) is an error

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, start: int, stop: int, what: str) -> Source:
        return replace(self, description=f"{self.description} [{what}]", indices=self.indices[start:stop])

    def batches(self, batch_size: int = 32) -> Iterator[np.ndarray]:
        for start in range(0, len(self.indices), batch_size):
            yield self._load(self.indices[start : start + batch_size])

    def labelled_batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.labels is None:
            raise BadInputError(
                f"{self.description} has no labels; use an ImageFolder (one sub-folder per class) or an .npz with 'labels'"
            )
        for start in range(0, len(self.indices), batch_size):
            idx = self.indices[start : start + batch_size]
            yield self._load(idx), self.labels[idx]

    def take(self, limit: int | None = None) -> np.ndarray:
        """All (or the first ``limit``) samples as one array: only for small verification sets."""
        idx = self.indices[:limit] if limit else self.indices
        return self._load(idx)

    def _load(self, idx: np.ndarray) -> np.ndarray:
        if self.array is not None:
            batch = np.ascontiguousarray(
                self.array[np.sort(idx)] if isinstance(self.array, np.memmap) else self.array[idx], dtype=np.float32
            )
            if not np.isfinite(batch).all():  # checked batch by batch: a large .npy is never read whole for this
                raise BadInputError(f"{self.description} holds NaN or infinite values; inputs must be finite, normalized floats")
            return batch
        assert self.files is not None  # an array or image files
        return normalize(np.stack([load_image(self.files[i], self.spec, strict=self.strict) for i in idx]), self.spec)


def image_source(folder: Path, spec: ModelSpec, strict: bool = True) -> Source:
    """The images of a folder in file order (labelled if it is an ImageFolder)."""
    files, labels, classes = image_folder(folder)
    kind = f"ImageFolder, {len(classes)} classes" if classes else "image folder"
    return Source(f"{folder} ({kind})", spec, np.arange(len(files)), files=files, labels=labels, strict=strict)


def array_source(path: Path, spec: ModelSpec) -> Source:
    """The samples of a .npy/.npz in file order."""
    array, labels = read_array(path, spec)
    return Source(str(path), spec, np.arange(len(array)), array=array, labels=labels)


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
        source = image_source(path, spec)
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        source = array_source(path, spec)
    else:
        raise BadInputError(f"{path} is neither a folder of images nor a .npy/.npz array (or 'digits')")
    return replace(source, indices=rng.permutation(len(source)))


def check_source(
    where: str | Path, spec: ModelSpec, flag: str, *, labels: bool = False, split: str = "train", verification: bool = False
) -> int:
    """Open and count a data source before any work: it exists, holds samples, its first one reads and fits.

    A problem is one sentence that starts with ``flag`` (``--calib``, ``calibration.data``). Returns the
    number of samples.
    """
    try:
        if str(where) == DIGITS and spec.channels != 1:
            raise BadInputError(
                "the demo digits (1-channel 8x8 images) do not fit this model, "
                f"which takes {spec.channels}x{spec.height}x{spec.width} "
                "inputs; use data like its inputs: an image folder or a .npy of normalized inputs"
            )
        if verification:
            path = Path(where)
            if not path.exists():
                raise BadInputError(f"{path} does not exist")
            source = array_source(path, spec) if path.suffix.lower() in ARRAY_SUFFIXES else image_source(path, spec, strict=False)
        else:
            source = open_source(where, spec, split=split)
        if len(source) == 0:
            raise BadInputError(f"{where} holds no samples")
        source.subset(0, 1, "first sample").take()  # readable, the model's shape and colour
        if labels and source.labels is None:
            raise BadInputError(
                f"{source.description} has no labels; use an ImageFolder (one sub-folder per class), "
                "an .npz with 'labels', or 'digits'"
            )
    except BadInputError as exc:
        raise BadInputError(f"{flag}: {exc}") from None
    return len(source)


def user_inputs(path: Path, spec: ModelSpec) -> InputSet:
    """The --images verification set: the first 16 images of a folder, or the first 64 samples of a .npy/.npz."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_SUFFIXES:
        batch = array_source(path, spec).take(VERIFY_SAMPLES)
        return InputSet(f"{path.name} ({len(batch)})", batch)
    batch = image_source(path, spec, strict=False).take(VERIFY_IMAGES)
    return InputSet(f"images ({len(batch)})", batch)


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
