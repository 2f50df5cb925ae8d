"""The few harmless Python types real training checkpoints carry, allowed under ``weights_only=True``.

torchvision's reference ``train.py`` and timm's ``train.py`` save their ``argparse.Namespace``;
training scripts save ``best_acc`` as a NumPy scalar and output folders as ``pathlib`` paths.
``torch.load(weights_only=True)`` refuses every global it does not know, so these files were
refused whole. Allowing exactly these types (through ``torch.serialization.safe_globals``, the
mechanism PyTorch provides) keeps the guarantee: the restricted unpickler still checks every
object *inside* them, so a hostile object hidden in a Namespace or in ``hyper_parameters`` is
refused like any other. Nothing here is callable with attacker-chosen code: a Namespace only
gets attributes set, the NumPy constructors build scalars/arrays/dtypes from bytes, and the path
classes build paths from strings.
"""

from __future__ import annotations

import contextlib


def safe_globals() -> list:
    """The allowlist: each entry a type/function, or (object, name it is pickled under)."""
    import argparse
    import pathlib

    import numpy as np

    allowed: list = [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]
    # A checkpoint written on Windows names WindowsPath, which cannot be instantiated here;
    # read it as the pure path it is.
    allowed.append((pathlib.PureWindowsPath, "pathlib.WindowsPath"))
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed += [np.ndarray, np.dtype, multiarray.scalar, multiarray._reconstruct]
    # files written by numpy 1.x name numpy.core.*, those by numpy 2.x numpy._core.*
    for package in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray.scalar, f"{package}.scalar"), (multiarray._reconstruct, f"{package}._reconstruct")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype (Float64DType, ...)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


@contextlib.contextmanager
def allowed_training_types():
    """Context for ``torch.load(weights_only=True)`` that also accepts the allowlist above."""
    import torch

    with torch.serialization.safe_globals(safe_globals()):
        yield


def load_weights_only(path: str):
    """``torch.load(path, weights_only=True)`` with the training-checkpoint allowlist."""
    import torch

    with allowed_training_types():
        return torch.load(path, map_location="cpu", weights_only=True)
