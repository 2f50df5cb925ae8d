"""Checkpoint sources: one module per ecosystem, each saying how it recognises its files and what it reads.

A source is one ``Source`` row: the stage it is asked at, ``recognises(file)`` (a
exporter.loading.probe.CheckpointFile: the facts the loader has about the path) and ``read(file)``,
which returns a RawCheckpoint (weights or a module, architecture hints, input spec, labels,
notes). exporter.loading.checkpoint_read asks them, stage by stage, in this order; the first
source that recognises the path reads it:

    folder   a directory; its config.json says which library saved it
             timm-hub, transformers, smp
    file     a file recognised by its bytes, nothing unpickled
             safetensors, torchscript, exported-program
    pickle   a torch.save zip recognised by the globals its pickle names (opcodes only, nothing runs)
             ultralytics
    object   what the restricted unpickler returned (the full one only with --trust-pickle)
             pickled-module, lightning, timm-train, torchvision-references, state-dict (any other dict)

A source installed as a plug-in (the ``cnnexport.sources`` entry point group, naming a Source or
a list of them) is asked before the built-in sources of its stage, so it can claim files a
generic reader would otherwise take; a broken one is named on stderr and ignored.
docs/architecture.md, "Adding a source", shows one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.loading.probe import CheckpointFile
    from exporter.loading.raw import RawCheckpoint

STAGES = ("folder", "file", "pickle", "object")
PLUGIN_GROUP = "cnnexport.sources"


@dataclass(frozen=True)
class Source:
    name: str  # how notes and `inspect` name it
    stage: str  # one of STAGES: what the loader already knows when it asks
    recognises: Callable[[CheckpointFile], bool]  # cheap, from the facts of its stage; never unpickles more
    read: Callable[[CheckpointFile], RawCheckpoint]
    reads: str = ""  # one line, for people: the files it reads
    # the task of each output ({name or "*": task}) of a module this ecosystem built, where it knows
    # better than the output's shape (a timm feature extractor returns feature maps, not class maps)
    tasks: Callable[[Any], dict[str, str]] | None = None


def built_in() -> list[Source]:
    """The sources shipped with cnnexport, in the order they are asked (see the module docstring)."""
    from exporter.sources import (
        exported_program,
        lightning,
        pickled_module,
        safetensors,
        smp,
        state_dict,
        timm,
        torchscript,
        torchvision_refs,
        transformers,
        ultralytics,
    )

    return [
        timm.HUB_FOLDER,
        transformers.FOLDER,
        smp.FOLDER,
        safetensors.FILE,
        torchscript.FILE,
        exported_program.FILE,
        ultralytics.PICKLE,
        pickled_module.OBJECT,
        lightning.OBJECT,
        timm.TRAIN_DICT,
        torchvision_refs.OBJECT,
        state_dict.OBJECT,
    ]


@functools.cache
def plugins() -> tuple[Source, ...]:
    """Sources from installed packages, read once: each ``cnnexport.sources`` entry point names a Source or a list."""
    from importlib.metadata import entry_points

    found: list[Source] = []
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            value = point.load()
            rows = list(value) if isinstance(value, (list, tuple)) else [value]
            if not all(isinstance(row, Source) and row.stage in STAGES for row in rows):
                raise TypeError(f"{point.value} is not a Source with a stage in {', '.join(STAGES)} (or a list of them)")
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not stop every checkpoint from loading
            import sys

            print(
                f"cnnexport: ignoring the source plug-in {point.name} ({point.value}): {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            continue
        found += rows
    return tuple(found)


def registered() -> list[Source]:
    """Every source, in the order the loader asks them: by stage; within one, plug-ins before the built-in ones."""
    every = [*plugins(), *built_in()]
    return [source for stage in STAGES for source in every if source.stage == stage]


def at(stage: str) -> list[Source]:
    return [source for source in registered() if source.stage == stage]


def output_tasks(module) -> dict[str, str]:
    """The tasks the sources know for a ready module's outputs ({} when none does)."""
    for source in registered():
        if source.tasks is not None:
            found = source.tasks(module)
            if found:
                return found
    return {}
