"""Architecture registry: name -> builder + default input spec.

Entries come from two places: every torchvision classification model (built with
``weights=None``; nothing is downloaded) and the classic models in
``architectures.classic`` that torchvision lacks. Importing this package is cheap;
torch and torchvision are imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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
        )


_REGISTRY: dict[str, ArchEntry] = {}
_loaded = False


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
    from architectures import classic, torchvision_models

    classic.register_all(register)
    torchvision_models.register_all(register)


def names() -> list[str]:
    _ensure_loaded()
    return list(_REGISTRY)


def entries() -> list[ArchEntry]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def get(name: str) -> ArchEntry | None:
    _ensure_loaded()
    return _REGISTRY.get(name) or _REGISTRY.get(name.lower().replace("-", "_"))
