"""The user's files are never a path we write: outputs that land on an input are refused before work.

An input is anything a command reads that the user owns: the checkpoint, the ONNX model, the
calibration / evaluation / --images data, the labels file, the recipe, an architecture file.
An output "lands on" an input when it is the same file however it is spelled (a relative path,
``..``, a symlink, a hard link: compared by device and inode), when it lies inside an input
folder (an image folder, a Hugging Face model folder), or when it is a folder we would replace
(an ``.mlpackage``, a build kit) that holds an input.

``refuse_clobbering`` is the check every verb and ``run`` make before any work (exit 2, the
input and its role named). ``protecting`` keeps the inputs registered while the work runs, so
that ``exporter.fsutil.Staging.commit`` refuses to move anything onto one of them even where a
path was not predicted (the last line of defence, not the main one).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from exporter.errors import BadInputError

Inputs = Iterable[tuple[str, "Path | str | None"]]  # (role, path): "the checkpoint", Path("resnet18.pt")

NOT_FILES = ("digits",)  # data sources that name a built-in set, not a path

_lock = threading.Lock()
_protected: Counter = Counter()  # (st_dev, st_ino) of inputs being read by running work
_roles: dict[tuple[int, int], str] = {}


def _identity(path: Path) -> tuple[int, int] | None:
    for spelling in (path, os.path.normpath(os.path.abspath(path))):  # "missing/../r.pt" is r.pt once written
        try:
            st = os.stat(spelling)  # follows symlinks: a link to the checkpoint is the checkpoint
        except OSError:
            continue
        return st.st_dev, st.st_ino
    return None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    real, base = _real(path), _real(folder)
    return real != base and base in real.parents


def _inputs(inputs: Inputs) -> list[tuple[str, Path]]:
    out = []
    for role, where in inputs:
        if where is None or str(where) in NOT_FILES:
            continue
        path = Path(where)
        if path.exists():
            out.append((role, path))
    return out


def clash(output: Path, inputs: Inputs, replaces_folder: bool = False) -> str | None:
    """Why writing ``output`` would harm one of ``inputs`` (one sentence), or None."""
    output = Path(output)
    mine = _identity(output)
    for role, path in _inputs(inputs):
        if mine is not None and mine == _identity(path):
            same = "" if _real(output) == _real(path) and str(output) == str(path) else f" (as {path})"
            return f"the output {output} is {role}{same}: writing it would destroy that file"
        if path.is_dir() and _inside(output, path):
            return f"the output {output} is inside {role} {path}: writing it would change that data"
        if replaces_folder and output.is_dir() and _inside(path, output):
            return f"the output {output} holds {role} {path}: replacing that folder would delete it"
    return None


def refuse_clobbering(outputs: Iterable[tuple[Path, bool]], inputs: Inputs, flag: str = "-o") -> None:
    """BadInputError (exit 2) when any planned output (path, replaces_folder) lands on an input."""
    inputs = _inputs(inputs)
    for output, folder in outputs:
        why = clash(output, inputs, folder)
        if why:
            raise BadInputError(f"{why}; choose another output path with {flag}")


@contextlib.contextmanager
def protecting(inputs: Inputs) -> Iterator[None]:
    """Register ``inputs`` as untouchable while the block runs (nested and threaded use is fine)."""
    ids = []
    for role, path in _inputs(inputs):
        ident = _identity(path)
        if ident is not None:
            ids.append(ident)
            with _lock:
                _protected[ident] += 1
                _roles.setdefault(ident, f"{role} {path}")
    try:
        yield
    finally:
        with _lock:
            for ident in ids:
                _protected[ident] -= 1
                if _protected[ident] <= 0:
                    del _protected[ident]
                    _roles.pop(ident, None)


def check_target(target: Path) -> None:
    """Refuse to replace ``target`` when it is an input some running work is reading."""
    ident = _identity(Path(target))
    if ident is None:
        return
    with _lock:
        role = _roles.get(ident) if _protected.get(ident) else None
    if role:
        raise BadInputError(
            f"the output {target} is {role}: writing it would destroy that file; choose another output path with -o"
        )
