"""Every torchvision classification model, by torchvision's own name."""

from __future__ import annotations

import functools

from architectures import IMAGENET_MEAN, IMAGENET_STD, ArchEntry

# torchvision models whose default input is not 224x224.
_INPUT_SIZE = {"inception_v3": 299}


def _build(name: str, **kwargs):
    import torchvision

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
