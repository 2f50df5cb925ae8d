"""torchvision's reference training script (``references/classification/train.py``) and dicts like it.

It saves ``{"model", "optimizer", "lr_scheduler", "epoch", "args": Namespace}``, plus
``model_ema`` (an ``AveragedModel``: ``module.`` keys and ``n_averaged``) with ``--model-ema``.
``args.model`` names the torchvision model, ``args.val_crop_size`` / ``val_resize_size`` /
``interpolation`` its evaluation transform. Any training dict with an ``args`` Namespace (or
dict) is read this way: scripts modelled on it keep those option names.
"""

from __future__ import annotations

import argparse

from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints, as_plain_dict, spec_from_train_args
from exporter.sources import Source
from exporter.sources.state_dict import metadata_hints, read_training_dict


def hints(obj: dict) -> Hints:
    args = as_plain_dict(obj.get("args")) or {}
    names = [(args["model"], "args.model")] if isinstance(args.get("model"), str) else []
    return metadata_hints(obj, Hints(names=names, spec=spec_from_train_args(args)))


def written_by_script(obj: dict) -> bool:
    return isinstance(obj.get("args"), argparse.Namespace) and "model" in obj and "lr_scheduler" in obj


def recognises(found: CheckpointFile) -> bool:
    obj = found.obj
    if not isinstance(obj, dict):
        return False
    return as_plain_dict(obj.get("args")) is not None


def read(found: CheckpointFile) -> RawCheckpoint:
    obj = found.obj
    tool = "torchvision references train.py" if written_by_script(obj) else None
    return read_training_dict(found, hints(obj), tool)


OBJECT = Source(
    name="torchvision-references",
    stage="object",
    recognises=recognises,
    read=read,
    reads="torchvision references/classification/train.py checkpoints (and dicts with its args)",
)
