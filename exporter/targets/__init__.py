"""Targets: each folder is one artifact kind (or a family, the ONNX rows), readable alone.

A folder holds its rows with their options models (``row.py``: ``ROWS`` and ``ORDER``), the
stage that makes the artifact and the runner that executes it; code about one target lives in
its folder and nowhere else. exporter/kinds.py finds the folders (``row_modules``) and registers
their rows exactly as it registers an installed plug-in's (``cnnexport.targets`` entry points):
adding an in-tree target is adding a folder, no shared exporter file changes.
"""

import contextlib
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any


def row_modules() -> list[ModuleType]:
    """Every folder's row module, in table order: by its ORDER (recipes, verbs and reports follow it), then name."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg and importlib.util.find_spec(f"{__name__}.{info.name}.row") is not None:
            found.append(importlib.import_module(f"{__name__}.{info.name}.row"))
    return sorted(found, key=lambda module: (module.ORDER, module.__name__))


def fixed_precision(precision: str) -> Callable[[Any], str]:
    """The pass rule of a row whose artifact always has one precision."""
    return lambda _options: precision


def always(_options: Any) -> bool:
    return True


@contextlib.contextmanager
def native_stderr_silenced():
    """Drop what C++ code writes to file descriptor 2 meanwhile (XNNPACK's probes); Python's stderr is untouched."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def first_line(exc: Exception) -> str:
    """A backend exception's first line (torch.export and converters raise pages), for one-sentence errors."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def options_precision(options) -> str:
    """The pass rule of a target whose options name their precision (fp32 / fp16 / int8)."""
    return options.precision


def calibrates_when_int8(options) -> bool:
    return options.precision == "int8"
