"""Lightning ``.ckpt`` files (``Trainer.save_checkpoint``), and any dict with ``hyper_parameters``.

The ``state_dict`` is keyed by the LightningModule's attributes (``model.``, ``net.`` … beside
loss buffers and metrics): the network is found under one of those prefixes when its
architecture is fitted (exporter/loading/arch_fit.py). ``hyper_parameters`` (from
``save_hyperparameters()``) may name the architecture under a key the user chose, and carry
spec fields.
"""

from __future__ import annotations

from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints, as_plain_dict, spec_from_metadata
from exporter.sources import Source
from exporter.sources.state_dict import metadata_hints, read_training_dict

VERSION_KEY = "pytorch-lightning_version"
# hyper_parameters keys that may name the architecture (Lightning users pick their own)
ARCH_HPARAMS = ("arch", "architecture", "model_name", "backbone", "arch_name", "model", "net", "network")


def hints(obj: dict) -> Hints:
    hparams = as_plain_dict(obj.get("hyper_parameters")) or {}
    names = [(hparams[key], f"hyper_parameters.{key}") for key in ARCH_HPARAMS if isinstance(hparams.get(key), str)]
    return metadata_hints(obj, Hints(names=names, spec=spec_from_metadata(hparams)))


def recognises(found: CheckpointFile) -> bool:
    obj = found.obj
    return isinstance(obj, dict) and (VERSION_KEY in obj or as_plain_dict(obj.get("hyper_parameters")) is not None)


def read(found: CheckpointFile) -> RawCheckpoint:
    obj = found.obj
    tool = f"Lightning {obj[VERSION_KEY]}" if VERSION_KEY in obj else None
    return read_training_dict(found, hints(obj), tool)


OBJECT = Source(name="lightning", stage="object", recognises=recognises, read=read, reads="Lightning .ckpt files")
