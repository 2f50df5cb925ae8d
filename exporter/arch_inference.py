"""Guess a registry architecture (and num_classes) from a state_dict's key names and shapes.

Candidates are built without allocating weights (on torch's meta device), so trying all
~90 registry entries takes a few seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ArchMatch:
    name: str
    num_classes: int


@contextlib.contextmanager
def _weights_on_meta():
    """Like accelerate's init_empty_weights: parameters/buffers go to meta, other tensor math stays real.

    Needed for builders (torchvision's RegNet) that compute sizes with real tensor ops.
    """
    import torch
    from torch import nn

    original_param = nn.Module.register_parameter
    original_buffer = nn.Module.register_buffer

    def register_parameter(module, name, param):
        original_param(module, name, param)
        if param is not None:
            kwargs = module._parameters[name].__dict__
            module._parameters[name] = nn.Parameter(
                module._parameters[name].to("meta"), requires_grad=module._parameters[name].requires_grad
            )
            module._parameters[name].__dict__.update(kwargs)

    def register_buffer(module, name, tensor, persistent=True):
        original_buffer(module, name, tensor, persistent)
        if tensor is not None:
            module._buffers[name] = module._buffers[name].to("meta")

    nn.Module.register_parameter = register_parameter
    nn.Module.register_buffer = register_buffer
    try:
        with torch.no_grad():
            yield
    finally:
        nn.Module.register_parameter = original_param
        nn.Module.register_buffer = original_buffer


def shape_signature(entry, num_classes: int | None = None) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of the entry's state_dict, without real weights; None if it cannot be built."""
    import warnings

    import torch

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for context in (lambda: torch.device("meta"), _weights_on_meta):
            try:
                with context():
                    model = entry.build(**kwargs)
                return {k: tuple(v.shape) for k, v in model.state_dict().items()}
            except Exception:  # noqa: BLE001 - a builder that fails here simply is not a candidate
                continue
    return None


def _classes_from_mismatch(expected: dict, actual: dict) -> int | None:
    """If shapes differ only in dim 0 of the final layer's weight/bias, that dim is num_classes."""
    mismatched = [k for k in expected if expected[k] != actual[k]]
    if not mismatched:
        return None
    sizes = set()
    for key in mismatched:
        e, a = expected[key], actual[key]
        if len(e) != len(a) or e[1:] != a[1:] or not key.endswith((".weight", ".bias")):
            return -1
        sizes.add(a[0])
    return sizes.pop() if len(sizes) == 1 else -1


def cache_dir() -> Path:
    """Where registry signatures are cached: $CNNEXPORT_CACHE, else $XDG_CACHE_HOME/cnnexport."""
    if os.environ.get("CNNEXPORT_CACHE"):
        return Path(os.environ["CNNEXPORT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnexport"


def registry_signatures(entries) -> dict[str, dict[str, tuple[int, ...]] | None]:
    """Default-num_classes signature of every entry, cached on disk per library versions.

    Building ~90 models (even without weights) costs seconds; the cache makes inference instant
    after the first run. A cache that cannot be read or written is simply rebuilt.
    """
    from importlib import metadata

    from exporter import __version__

    versions = f"{metadata.version('torch')}-{metadata.version('torchvision')}-{__version__}"
    path = cache_dir() / f"signatures-{versions}.json"
    cached: dict = {}
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    out: dict = {}
    missing = False
    for entry in entries:
        if entry.name in cached:
            sig = cached[entry.name]
            out[entry.name] = None if sig is None else {k: tuple(v) for k, v in sig.items()}
        else:
            out[entry.name] = shape_signature(entry)
            missing = True
    if missing:
        try:
            from exporter.fsutil import write_text_atomic

            write_text_atomic(path, json.dumps({**cached, **out}))
        except (OSError, Exception):  # noqa: BLE001 - a cache is optional
            pass
    return out


def _match(entry, expected, actual) -> ArchMatch | None:
    if expected is None or expected.keys() != actual.keys():
        return None
    classes = _classes_from_mismatch(expected, actual)
    if classes is None:
        return ArchMatch(entry.name, entry.num_classes)
    if classes > 0 and shape_signature(entry, classes) == actual:
        return ArchMatch(entry.name, classes)
    return None


def name_hint(file_stem: str, entries) -> object | None:
    """The registry entry a file is named after ('resnet18_best.pt' -> resnet18), longest name first."""
    stem = file_stem.lower().replace("-", "_")
    named = sorted(entries, key=lambda e: -len(e.name))
    return next((e for e in named if stem == e.name or stem.startswith(e.name + "_") or stem.startswith(e.name + ".")), None)


def infer_architecture(state_dict: dict, entries, file_stem: str | None = None) -> list[ArchMatch]:
    """Every registry entry whose state_dict has exactly these keys and shapes (num_classes free).

    A file named after a registry entry is tried first, and an exact match there ends the
    search: no signatures of the other ~90 entries are needed (the slow part on a cold cache).
    """
    actual = {k: tuple(v.shape) for k, v in state_dict.items()}
    entries = list(entries)
    hinted = name_hint(file_stem, entries) if file_stem else None
    if hinted is not None:
        found = _match(hinted, shape_signature(hinted), actual)
        if found is not None:
            return [found]
    signatures = registry_signatures(entries)
    return [m for m in (_match(e, signatures[e.name], actual) for e in entries) if m is not None]
