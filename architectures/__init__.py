"""Architecture registry: name -> builder + default input spec.

Entries come from two places: every torchvision classification and segmentation model (built
with ``weights=None``; nothing is downloaded) and the classic models in
``exporter.architectures.classic`` that torchvision lacks. Importing this package is cheap;
torch and torchvision are imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchEntry:
    name: str
    builder: Callable[..., Any]
    num_classes: int
    channels: int = 3
    height: int = 224
    width: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    source: str = "classic"
    description: str = ""
    interpolation: str | None = None
    crop_pct: float | None = None
    task: str = "classify"  # what the first output is: classify (logits) or segment (class maps)

    def build(self, **kwargs):
        """Build a randomly initialised model; ``num_classes`` defaults to the entry's."""
        kwargs.setdefault("num_classes", self.num_classes)
        return self.builder(**kwargs)

    def spec(self, num_classes: int | None = None):
        from exporter.spec import ModelSpec

        return ModelSpec(
            arch=self.name,
            num_classes=num_classes if num_classes is not None else self.num_classes,
            channels=self.channels,
            height=self.height,
            width=self.width,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
            crop_pct=self.crop_pct,
        )


_REGISTRY: dict[str, ArchEntry] = {}
_loaded = False
_timm_loaded = False


def register(entry: ArchEntry) -> ArchEntry:
    """Add an entry; a second entry with the same name is a programming error."""
    if entry.name in _REGISTRY:
        raise ValueError(f"architecture {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from exporter.architectures import classic, torchvision_models

    classic.register_all(register)
    torchvision_models.register_all(register)


def _ensure_timm() -> bool:
    """Register timm's models (once); False when timm is not installed."""
    global _timm_loaded
    from exporter.architectures import timm_models

    if not timm_models.available():
        return False
    _ensure_loaded()
    if not _timm_loaded:
        _timm_loaded = True
        timm_models.register_all(register)
    return True


def timm_available() -> bool:
    from exporter.architectures import timm_models

    return timm_models.available()


def names(include_timm: bool = False) -> list[str]:
    return [e.name for e in entries(include_timm)]


def entries(include_timm: bool = False, source: str | None = None) -> list[ArchEntry]:
    """Built-in entries (classic + torchvision); timm's too when asked and installed."""
    _ensure_loaded()
    if include_timm or source == "timm":
        _ensure_timm()
    found = [e for e in _REGISTRY.values() if include_timm or source == "timm" or e.source != "timm"]
    return [e for e in found if source is None or e.source == source]


def get(name: str) -> ArchEntry | None:
    """Registry name, then timm's: 'timm:NAME' or 'timm/NAME.tag' always, a bare NAME only timm knows."""
    from exporter.architectures import timm_models

    _ensure_loaded()
    wanted = timm_models.timm_name(name)
    if wanted is None:
        found = _REGISTRY.get(name) or _REGISTRY.get(name.lower().replace("-", "_"))
        if found is not None or ":" in name or "/" in name:
            return found  # file.py:Class and package.module:factory are not timm names
        wanted = name.split(".")[0]
    if not _ensure_timm():
        return None
    return _REGISTRY.get(timm_models.PREFIX + wanted)
