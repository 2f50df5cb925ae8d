"""Every torchvision classification and semantic segmentation model, by torchvision's own name."""

from __future__ import annotations

import functools

from exporter.architectures import IMAGENET_MEAN, IMAGENET_STD, ArchEntry

# torchvision models whose default input is not 224x224.
_INPUT_SIZE = {"inception_v3": 299}


# torchvision's segmentation references evaluate at 520x520 (train.py: resize 520, crop 480).
SEGMENTATION_SIZE = 520


def _build(name: str, **kwargs):
    import torchvision

    return torchvision.models.get_model(name, weights=None, **kwargs)


def _build_segmentation(name: str, **kwargs):
    """weights_backbone=None too: its default downloads ImageNet weights. Returns {"out": ...} (+ "aux" with aux_loss=True)."""
    import torchvision

    kwargs.setdefault("weights_backbone", None)
    return torchvision.models.get_model(name, weights=None, **kwargs)


def register_all(register) -> None:
    import torchvision

    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        size = _INPUT_SIZE.get(name, 224)
        register(
            ArchEntry(
                name=name,
                builder=functools.partial(_build, name),
                num_classes=1000,
                height=size,
                width=size,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                source="torchvision",
            )
        )
    for name in sorted(torchvision.models.list_models(module=torchvision.models.segmentation)):
        register(
            ArchEntry(
                name=name,
                builder=functools.partial(_build_segmentation, name),
                num_classes=21,  # Pascal VOC's 20 classes + background, torchvision's default
                height=SEGMENTATION_SIZE,
                width=SEGMENTATION_SIZE,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                source="torchvision",
                task="segment",
                description="semantic segmentation: returns {'out'} (+ 'aux' with aux_loss=True)",
            )
        )
