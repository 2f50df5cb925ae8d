"""ModelSpec: everything about a model's input and output that deployment needs.

Resolved like timm's data config: command line > artifact/checkpoint metadata > registry default.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

from exporter.errors import BadInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

METADATA_KEY = "cnnexport.spec"
# More values per image than this is a typo, not a CNN input (3x224x224 has 150,528); refused
# before anything allocates a batch of that size.
MAX_INPUT_VALUES = 2**27


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    num_classes: int
    channels: int = 3
    height: int = 224
    width: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: tuple[str, ...] | None = field(default=None)
    # How the training pipeline resized images (timm's pretrained_cfg, torchvision's train.py
    # args): recorded so a deployment's preprocessing can match; nothing here resizes.
    interpolation: str | None = None
    crop_pct: float | None = None
    # How images become the input: None = resize the short side and centre-crop (classifiers);
    # "letterbox" = fit the long side and pad with grey 114 (Ultralytics' detectors). Verification's
    # --images follow it, so PyTorch and the artifact see what the deployment will feed.
    resize: str | None = None
    # What forward returns, one entry per named output (exporter/outputs.py); () = one logits output.
    outputs: tuple = ()

    def __post_init__(self) -> None:
        if self.channels < 1 or self.height < 1 or self.width < 1:
            raise BadInputError(f"input shape {self.input_shape} must be positive in every dimension")
        if self.channels * self.height * self.width > MAX_INPUT_VALUES:
            raise BadInputError(
                f"input shape {'x'.join(map(str, self.input_shape))} has {self.channels * self.height * self.width:,} values "
                f"per image, more than the {MAX_INPUT_VALUES:,} cnnexport accepts; check --input-shape"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise BadInputError(f"--{name} has {len(values)} values but the model has {self.channels} input channels")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise BadInputError("--mean and --std values must be finite numbers")
        if any(s <= 0 for s in self.std):
            raise BadInputError("--std values must be positive")
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise BadInputError(f"the labels list has {len(self.labels)} entries but the model has {self.num_classes} classes")

    @property
    def output_names(self) -> list[str]:
        from exporter.outputs import SINGLE_OUTPUT_NAME

        return [o.name for o in self.outputs] or [SINGLE_OUTPUT_NAME]

    def output_spec(self, name: str):
        """The OutputSpec of output ``name``; None when the spec does not list it (a classifier's logits)."""
        return next((o for o in self.outputs if o.name == name), None)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def channel_mean(self) -> tuple[float, ...]:
        return tuple(self.mean) * (self.channels if len(self.mean) == 1 else 1)

    def channel_std(self) -> tuple[float, ...]:
        return tuple(self.std) * (self.channels if len(self.std) == 1 else 1)

    def with_overrides(self, **overrides) -> ModelSpec:
        """Return a copy with every non-None override applied."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "input_shape" in clean:
            c, h, w = clean.pop("input_shape")
            clean.update(channels=c, height=h, width=w)
        for key in ("mean", "std", "labels", "outputs"):
            if key in clean:
                clean[key] = tuple(clean[key])
        return replace(self, **clean)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["labels"] = list(self.labels) if self.labels is not None else None
        d["outputs"] = [o.to_dict() for o in self.outputs]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        from exporter.outputs import OutputSpec

        try:
            return cls(
                arch=str(d["arch"]),
                num_classes=int(d["num_classes"]),
                channels=int(d["channels"]),
                height=int(d["height"]),
                width=int(d["width"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                labels=tuple(d["labels"]) if d.get("labels") is not None else None,
                interpolation=str(d["interpolation"]) if d.get("interpolation") is not None else None,
                crop_pct=float(d["crop_pct"]) if d.get("crop_pct") is not None else None,
                resize=str(d["resize"]) if d.get("resize") is not None else None,
                outputs=tuple(OutputSpec.from_dict(o) for o in d.get("outputs") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInputError(f"the stored input spec is malformed ({exc})") from exc


def stored_spec(text: str, where) -> dict:
    """The ``cnnexport.spec`` JSON an artifact carries, as a dict; a damaged one is bad input, not a crash."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadInputError(f"{where} carries a damaged {METADATA_KEY} metadata entry (not JSON: {exc})") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{where} carries a damaged {METADATA_KEY} metadata entry (a {type(value).__name__}, not an object)")
    return value


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """Parse '0.5,0.5,0.5' (commas or spaces)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise BadInputError(f"{option} expects numbers separated by commas, got {text!r}") from None
    if not values:
        raise BadInputError(f"{option} expects at least one number")
    if not all(math.isfinite(v) for v in values):
        raise BadInputError(f"{option} expects finite numbers, got {text!r}")
    return values


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """Parse 'C,H,W' or 'CxHxW'."""
    parts = [p for p in text.lower().replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise BadInputError(f"--input-shape expects C,H,W (e.g. 3,224,224), got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise BadInputError(f"--input-shape expects three positive integers C,H,W, got {text!r}")
    return dims


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an artifact is made for: MIN <= OPT <= MAX (a TensorRT profile, an ExecuTorch program)."""

    min: int
    opt: int
    max: int

    def shapes(self, chw: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
        return {k: (getattr(self, k), *chw) for k in ("min", "opt", "max")}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_batch_range(text: str, option: str = "--batch") -> tuple[int, int, int]:
    """'1:8:32' -> (1, 8, 32); anything else is a BadInputError saying what is wanted."""
    wanted = f"{option} expects MIN:OPT:MAX positive integers with MIN <= OPT <= MAX, e.g. 1:8:32"
    parts = str(text).strip().split(":")
    if len(parts) != 3:
        raise BadInputError(f"{wanted}; got {text!r}")
    try:
        low, opt, high = (int(p) for p in parts)
    except ValueError:
        raise BadInputError(f"{wanted}; got {text!r}") from None
    if low < 1:
        raise BadInputError(f"{wanted}; got {text!r} (batch sizes start at 1)")
    if not low <= opt <= high:
        raise BadInputError(f"{wanted}; got {text!r} (not in increasing order)")
    return low, opt, high


def parse_batch_sizes(text: str, option: str = "--batch-sizes") -> tuple[int, ...]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise BadInputError(f"{option} expects integers like 1,4, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise BadInputError(f"{option} expects positive integers, got {text!r}")
    return sizes


def read_labels(path) -> tuple[str, ...]:
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"labels file {p} does not exist") from None
    except UnicodeDecodeError:
        raise BadInputError(f"labels file {p} is not UTF-8 text") from None
    except OSError as exc:
        raise BadInputError(f"labels file {p} cannot be read ({exc.strerror})") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise BadInputError(f"labels file {p} is empty; write one class name per line")
    return labels
