"""Building the user's model and putting weights into it: the layer every loader stands on.

``--arch file.py:Class`` / ``package.module:factory`` is built here, and a state_dict goes into
a module only through ``load_state_dict_strict``, which says what does not fit.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from exporter.errors import ArchitectureError, CheckpointError, first_line


def resolve_user_arch(arch: str, kwargs: dict):
    """Build a model from 'file.py:Name' or 'package.module:Name' (a class or a factory)."""
    target, _, attr = arch.rpartition(":")
    if not target or not attr:
        raise ArchitectureError(
            f"unknown architecture {arch!r}; use a registry name (see `cnnexport architectures`), "
            "file.py:ClassName or package.module:factory"
        )
    if target.endswith(".py"):
        file = Path(target)
        if not file.is_file():
            raise ArchitectureError(f"architecture file {file} does not exist")
        module_name = f"_cnnexport_user_{file.stem}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ArchitectureError(f"architecture file {file} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(file.parent.resolve()))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ArchitectureError(f"importing {file} failed: {type(exc).__name__}: {first_line(exc)}") from exc
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ArchitectureError(f"cannot import module {target!r} for --arch ({first_line(exc)})") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ArchitectureError(f"{target} has no class or function named {attr!r}")
    try:
        return factory(**kwargs)
    except Exception as exc:
        raise ArchitectureError(f"building {arch} with {kwargs} failed: {type(exc).__name__}: {first_line(exc)}") from exc


def load_state_dict_strict(module, state_dict: dict, arch: str) -> None:
    """Strict load with an error that lists what does not fit."""
    from collections import OrderedDict

    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f", … (+{len(items) - 5})" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label} ({shown})")
    if problems:
        raise CheckpointError(f"the checkpoint does not fit architecture {arch}: " + "; ".join(problems))
    # load_state_dict would silently cast integer or bool tensors into float weights
    not_float = [k for k in own if own[k].is_floating_point() and not state_dict[k].is_floating_point()]
    if not_float:
        first = not_float[0]
        raise CheckpointError(
            f"the checkpoint holds {str(state_dict[first].dtype).removeprefix('torch.')} values where {arch} has "
            f"floating-point weights ({len(not_float)} tensor(s), first: {first}); save the trained model's float state_dict"
        )
    if getattr(state_dict, "_metadata", None) is None:
        # safetensors files and re-keyed dicts carry no per-module versions: take the model's own
        # (the keys already match it), or a versioned module like MNASNet refuses to load.
        state_dict = OrderedDict(state_dict)
        state_dict._metadata = own._metadata  # type: ignore[attr-defined]  # torch's per-module versions ride on the dict
    try:
        module.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{arch} refused the checkpoint's weights: {first_line(exc)}") from exc
