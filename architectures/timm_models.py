"""Every timm model, by timm's own name, as registry entries named ``timm:NAME`` (optional extra).

timm is imported only when a timm entry is asked for. Its names overlap torchvision's
(``resnet18``, ``densenet121`` …): the bare name means the torchvision entry, ``timm:resnet18``
(or the Hub's ``timm/resnet18.a1_in1k``) means timm's; a name only timm knows needs no prefix.
The default input spec is the model's default ``pretrained_cfg``: input_size, mean, std, and the
interpolation and crop_pct its evaluation transform uses.
"""

from __future__ import annotations

import functools
import importlib.util

from exporter.architectures import IMAGENET_MEAN, IMAGENET_STD, ArchEntry

PREFIX = "timm:"
INSTALL_HINT = "pip install 'cnnexport[timm]'"


def available() -> bool:
    return importlib.util.find_spec("timm") is not None


def timm_name(name: str) -> str | None:
    """'timm:resnet18' / 'timm/resnet18.a1_in1k' -> 'resnet18'; None for a name without a timm prefix."""
    for prefix in (PREFIX, "timm/"):
        if name.startswith(prefix):
            return name[len(prefix) :].split(".")[0]
    return None


def _build(name: str, **kwargs):
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def _entry(name: str, cfg) -> ArchEntry:
    cfg = cfg.to_dict() if cfg is not None else {}
    c, h, w = tuple(cfg.get("input_size") or (3, 224, 224))
    return ArchEntry(
        name=PREFIX + name,
        builder=functools.partial(_build, name),
        num_classes=int(cfg.get("num_classes") or 1000),
        channels=int(c),
        height=int(h),
        width=int(w),
        mean=tuple(float(v) for v in cfg.get("mean") or IMAGENET_MEAN),
        std=tuple(float(v) for v in cfg.get("std") or IMAGENET_STD),
        source="timm",
        description=str(cfg.get("hf_hub_id") or ""),
        interpolation=cfg.get("interpolation"),
        crop_pct=float(cfg["crop_pct"]) if cfg.get("crop_pct") is not None else None,
    )


def register_all(register) -> None:
    import timm

    for name in timm.list_models():
        register(_entry(name, timm.get_pretrained_cfg(name, allow_unregistered=True)))
