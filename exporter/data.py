"""Input sources for verification (later also calibration and evaluation).

Every source yields float32 NCHW batches already normalized with the model's spec, and
can be iterated more than once.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import BadInputError
from exporter.spec import ModelSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


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


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise BadInputError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInputError(f"image folder {folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_image(path: Path, spec: ModelSpec) -> np.ndarray:
    """Resize the short side to H/0.875, centre-crop HxW, scale to [0, 1]; returns CHW."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if spec.channels == 1 else "RGB")
            scale = max(spec.height, spec.width) / 0.875 / min(img.size)
            new_size = (max(spec.width, round(img.size[0] * scale)), max(spec.height, round(img.size[1] * scale)))
            img = img.resize(new_size, Image.BILINEAR)
            left = (img.size[0] - spec.width) // 2
            top = (img.size[1] - spec.height) // 2
            img = img.crop((left, top, left + spec.width, top + spec.height))
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"image {path} cannot be read ({exc})") from None
    if spec.channels not in (1, 3):
        raise BadInputError(f"images can feed 1- or 3-channel models only; this model takes {spec.channels} channels")
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def image_folder_inputs(folder: Path, spec: ModelSpec, limit: int = 16) -> InputSet:
    files = list_images(folder)[:limit]
    pixels = np.stack([load_image(f, spec) for f in files])
    return InputSet(f"images ({len(files)})", normalize(pixels, spec))


def array_inputs(path: Path, spec: ModelSpec, limit: int = 64) -> InputSet:
    """A .npy/.npz of already-normalized inputs shaped (N, C, H, W)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                key = "inputs" if "inputs" in data.files else data.files[0]
                data = data[key]
    except (OSError, ValueError, IndexError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{path} is not a readable .npy/.npz array ({exc or 'no arrays inside'})") from None
    if data.ndim != 4 or tuple(data.shape[1:]) != spec.input_shape:
        raise BadInputError(
            f"{path} holds an array of shape {tuple(data.shape)}; expected (N, {', '.join(map(str, spec.input_shape))})"
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise BadInputError(f"{path} holds {data.dtype} values; expected normalized float inputs")
    batch = np.ascontiguousarray(data[:limit], dtype=np.float32)
    if len(batch) == 0 or not np.isfinite(batch).all():
        raise BadInputError(f"{path} holds no samples or NaN/infinite values; expected finite, normalized float inputs")
    return InputSet(f"{path.name} ({len(batch)})", batch)


def user_inputs(path: Path, spec: ModelSpec) -> InputSet:
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz"):
        return array_inputs(path, spec)
    return image_folder_inputs(path, spec)
