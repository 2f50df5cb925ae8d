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

``unpickle`` is the one place a checkpoint is unpickled: with this allowlist, and without it only
when the user passed ``--trust-pickle`` and the restricted unpickler refused the file.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from exporter.errors import CheckpointError, first_line
from exporter.loading.quantized_forms import QUANTIZED_ADVICE, quantized_globals


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


def unpickle(path: Path, head: bytes, trust_pickle: bool = False):
    """The object a torch.save file holds, saying why a file is refused (nothing runs unless trusted)."""
    import torch

    try:
        return load_weights_only(str(path))
    except Exception as exc:
        text = str(exc)
        if not head.startswith(b"PK") and not is_pickle_stream(path):
            # random or foreign bytes also fail the weights-only unpickler: say what the file is not,
            # rather than suggest --trust-pickle for something that holds no pickled objects
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: it is neither a torch.save file (zip or pickle) nor safetensors"
            ) from exc
        if "Weights only load failed" not in text:
            raise CheckpointError(unreadable_message(path, exc)) from exc
        quantized = quantized_globals(path)
        if quantized:
            # torch.save(model) after torch.ao convert: even unpickled (--trust-pickle) it is broken in torch itself
            raise CheckpointError(
                f"{path} holds a whole quantized model "
                f"(torch.ao converted: {', '.join(sorted(set(n.rsplit('.', 1)[-1] for n in quantized))[:4])}); "
                + QUANTIZED_ADVICE
            ) from exc
        if not trust_pickle:
            raise CheckpointError(refused_pickle_message(path, exc)) from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise CheckpointError(
            f"{path} is a pickled model whose code lives in module '{exc.name}', which cannot be imported here; "
            "run from the directory of that code (or add it to PYTHONPATH), or save a state_dict instead"
        ) from exc
    except AttributeError as exc:
        raise CheckpointError(
            f"{path} is a pickled model whose class cannot be found ({first_line(exc)}); "
            "make its code importable, or save a state_dict instead"
        ) from exc
    except Exception as exc:
        raise CheckpointError(unreadable_message(path, exc)) from exc


def refused_pickle_message(path: Path, exc: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" (it references {found.group(1)})" if found else ""
    return (
        f"{path} contains pickled Python objects{what}; unpickling it could run arbitrary code. "
        "Re-run with --trust-pickle only if you trust where the file came from, or save model.state_dict() instead"
    )


def unreadable_message(path: Path, exc: Exception) -> str:
    text = str(exc)
    reason = first_line(exc).split(". ")[0]
    if "zip" in text.lower() or "central directory" in text.lower() or "EOF" in text or isinstance(exc, EOFError):
        return f"{path} is truncated or corrupt and cannot be read as a PyTorch checkpoint ({reason})"
    return f"{path} is not a PyTorch checkpoint that can be read ({reason})"


def is_pickle_stream(path: Path) -> bool:
    """Whether the file starts with a complete pickle; parses opcodes only, runs nothing."""
    import pickletools

    try:
        with open(path, "rb") as fh:
            for _ in pickletools.genops(fh):
                pass
        return True
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
        return False
