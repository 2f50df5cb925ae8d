"""Targets written the plug-in way: each folder is one row of the stage table and nothing else.

A folder holds the row with its options model (``row.py``), the stage that makes the
artifact (``stage.py``) and the runner that executes it (``runner.py``). exporter/kinds.py
registers the rows named in ``BUILTIN`` exactly as it registers an installed plug-in's
(``cnnexport.targets`` entry points): nothing else in exporter/ names these targets.
"""

import contextlib

BUILTIN = (
    "exporter.targets.executorch.row:ROWS",  # Android / embedded: ExecuTorch .pte on XNNPACK
    "exporter.targets.litert.row:ROWS",  # Android: LiteRT .tflite (formerly TensorFlow Lite)
)


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
