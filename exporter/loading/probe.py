"""What the loader knows about a checkpoint path, each fact computed once and only when a source asks.

Sources (exporter/sources/) recognise their files from these facts, cheapest first: a folder's
``config.json``; a file's first bytes and the layout of its zip; the globals its pickle names
(read from the opcodes, nothing runs); last, the object the restricted unpickler returns.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from exporter.errors import CheckpointError, first_line
from exporter.loading.raw import RawCheckpoint


@dataclass(eq=False)
class CheckpointFile:
    path: Path
    trust_pickle: bool = False  # --trust-pickle: a pickle the restricted unpickler refuses may be unpickled
    weights: str = "model"  # --weights: model, ema, a training-dict key or a key prefix ending in '.'
    # the loader itself, for the weights file beside a folder's config.json (read like any file)
    read_file: Callable[[Path], RawCheckpoint] | None = None

    @cached_property
    def config(self) -> dict:
        """A folder's config.json ({} when there is none): which library saved the folder."""
        config_path = self.path / "config.json"
        return read_json(config_path) if config_path.is_file() else {}

    @cached_property
    def head(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read(16)

    @cached_property
    def is_zip(self) -> bool:
        return zipfile.is_zipfile(self.path)

    @cached_property
    def layout(self) -> str | None:
        """What wrote the zip (see ``zip_layout``); None for a file that is not one."""
        return zip_layout(zip_names(self.path)) if self.is_zip else None

    @cached_property
    def unsafe_globals(self) -> list[str]:
        """The globals a torch.save zip's pickle names beyond torch's own (opcodes only); [] for other files."""
        import torch

        if not self.head.startswith(b"PK") or not self.is_zip:
            return []
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(self.path)))
        except Exception:  # noqa: BLE001 - an odd zip: the generic reader says what is wrong with it
            return []

    @cached_property
    def obj(self) -> Any:
        """What the file unpickles to: weights-only, or fully with --trust-pickle (exporter/loading/safe_pickle.py)."""
        from exporter.loading.safe_pickle import unpickle

        return unpickle(self.path, self.head, self.trust_pickle)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return value


def zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def zip_layout(names: list[str]) -> str | None:
    """What wrote a zip, from the archive's own layout (never from the user's module paths inside it).

    Every writer puts its records under one top-level folder (the file's stem, or ``archive``):
    torch.export.save writes ``archive_format`` there (before torch 2.5,
    ``serialized_exported_program.json``), torch.jit.save ``constants.pkl`` and the ``code/`` of
    the scripted classes (which torch.load itself checks for), torch.save ``data.pkl`` alone.
    A TorchScript archive of torchvision's models holds ``code/__torch__/torchvision/models/...``
    and a user package may be called ``models`` or ``code``: only these top-level records count.
    Returns "exported-program", "torchscript", "torch.save" or None (not one of these).
    """
    if not names:
        return None
    top = names[0].split("/", 1)[0] + "/" if "/" in names[0] else ""
    own = {n[len(top) :] for n in names if n.startswith(top)}
    if "archive_format" in own or any(n.endswith("serialized_exported_program.json") for n in names):
        return "exported-program"
    if "constants.pkl" in own and any(n.startswith("code/") for n in own):
        return "torchscript"
    if "data.pkl" in own:
        return "torch.save"
    return None
