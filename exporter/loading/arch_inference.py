"""Guess a registry architecture (and num_classes) from a state_dict's key names and shapes.

Candidates are built without allocating weights (on torch's meta device); a cached key
fingerprint per entry means only the entries with the very same key set are ever built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
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


# In-place ops weight initialisation uses. On meta tensors they compute nothing but still cost
# a fake-kernel dispatch each: skipping them makes building timm's ~1,400 models 2.8x faster
# (same signatures; in-place ops never change a shape).
_INIT_OPS = (
    "normal_",
    "uniform_",
    "fill_",
    "zero_",
    "erfinv_",
    "clamp_",
    "mul_",
    "add_",
    "copy_",
    "div_",
    "sub_",
    "exponential_",
    "bernoulli_",
    "random_",
    "log_normal_",
    "sqrt_",
    "neg_",
    "abs_",
)


@contextlib.contextmanager
def _skip_meta_init():
    import torch

    saved = {name: getattr(torch.Tensor, name) for name in _INIT_OPS}

    def skipping(original):
        def op(self, *args, **kwargs):
            return self if self.is_meta else original(self, *args, **kwargs)

        return op

    for name, original in saved.items():
        setattr(torch.Tensor, name, skipping(original))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def shape_signature(entry, num_classes: int | None = None) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of the entry's state_dict, without real weights; None if it cannot be built."""
    import warnings

    import torch

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for context in (lambda: torch.device("meta"), _weights_on_meta):
            try:
                with context(), _skip_meta_init():
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
    """Where registry fingerprints are cached: $CNNEXPORT_CACHE, else $XDG_CACHE_HOME/cnnexport."""
    if os.environ.get("CNNEXPORT_CACHE"):
        return Path(os.environ["CNNEXPORT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnexport"


def key_fingerprint(keys) -> str:
    """A state_dict's key set as one short hash: key names do not depend on num_classes."""
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def _library_versions(source: str) -> str:
    from importlib import metadata

    libraries = ("torch", "torchvision", "timm") if source == "timm" else ("torch", "torchvision")
    return "-".join(metadata.version(lib) for lib in libraries)


def _cache_path(source: str) -> Path:
    from exporter import __version__

    return cache_dir() / f"fingerprints-{source}-{_library_versions(source)}-{__version__}.json"


def shipped_fingerprints_name(source: str) -> str:
    """The file the package ships for these library versions (scripts/timm-fingerprints.py writes it)."""
    return f"fingerprints-{source}-{_library_versions(source)}.json"


def _shipped(source: str) -> dict:
    """timm's fingerprints as shipped with the package for the timm/torch it was released with.

    A timm entry's keys are timm's alone (our builder only names the model), so a file made for the
    same timm, torch and torchvision holds the same fingerprints: the first inferred load on a fresh
    machine reads it instead of building ~1,400 models for minutes. Other versions get {} (built).
    """
    if source != "timm":
        return {}
    from importlib import resources

    try:
        text = resources.files("exporter.loading").joinpath(shipped_fingerprints_name(source)).read_text()
        return dict(json.loads(text))
    except (OSError, ValueError, TypeError):
        return {}


_READ: dict[Path, dict] = {}  # cache files already read by this process (one load tries many prefixes)


def registry_fingerprints(entries, progress: Callable[[str], None] | None = None) -> dict[str, str | None]:
    """Key fingerprint of every entry, cached on disk per source and library versions.

    Building a model without weights costs ~0.1 s, so the ~90 built-in entries take seconds and
    timm's ~1,400 a few minutes, once; afterwards inference reads one small file. A cache that
    cannot be read or written is simply rebuilt.
    """
    out: dict[str, str | None] = {}
    for source in sorted({e.source for e in entries}):
        group = [e for e in entries if e.source == source]
        path = _cache_path(source)
        cached = _READ.get(path)
        if cached is None:
            try:
                cached = json.loads(path.read_text())
            except (OSError, ValueError):
                cached = _shipped(source)
            _READ[path] = cached
        missing = [e for e in group if e.name not in cached]
        if missing and progress is not None and len(missing) > 50:
            progress(f"indexing {len(missing)} {source} architectures for inference (once per library version)")
        for entry in missing:
            signature = shape_signature(entry)
            cached[entry.name] = None if signature is None else key_fingerprint(signature)
        if missing:
            try:
                from exporter.fsutil import write_text_atomic

                write_text_atomic(path, json.dumps(cached))
            except Exception:  # noqa: BLE001 - a cache is optional
                pass
        out.update({e.name: cached[e.name] for e in group})
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


def match_entry(entry, state_dict: dict) -> ArchMatch | None:
    """The entry (with the num_classes the classifier's shape says) if it fits these keys and shapes."""
    return _match(entry, shape_signature(entry), {k: tuple(v.shape) for k, v in state_dict.items()})


def _bare(name: str) -> str:
    return name.split(":", 1)[1] if name.startswith("timm:") else name


def name_hint(file_stem: str, entries) -> object | None:
    """The registry entry a file is named after ('resnet18_best.pt' -> resnet18), longest name first."""
    hinted = name_hints(file_stem, entries)
    return hinted[0] if hinted else None


def name_hints(file_stem: str, entries) -> list:
    """Every entry named like the file (torchvision's resnet18 and timm's, for 'resnet18_best.pt')."""
    stem = file_stem.lower().replace("-", "_")
    best = None
    for entry in sorted(entries, key=lambda e: -len(_bare(e.name))):
        name = _bare(entry.name)
        if stem == name or stem.startswith(name + "_") or stem.startswith(name + "."):
            best = name
            break
    return [e for e in entries if _bare(e.name) == best] if best else []


def infer_architecture(state_dict: dict, entries, file_stem: str | None = None, progress=None) -> list[ArchMatch]:
    """Every registry entry whose state_dict has exactly these keys and shapes (num_classes free).

    A file named after a registry entry is tried first, and a fit there ends the search: no
    fingerprints of the other entries are needed (the slow part on a cold cache). Otherwise only
    the entries with the same key set (by fingerprint) are built and compared shape by shape.
    """
    actual = {k: tuple(v.shape) for k, v in state_dict.items()}
    entries = list(entries)
    hinted = [m for m in (_match(e, shape_signature(e), actual) for e in name_hints(file_stem or "", entries)) if m]
    if hinted:
        return hinted
    wanted = key_fingerprint(actual)
    fingerprints = registry_fingerprints(entries, progress)
    candidates = [e for e in entries if fingerprints.get(e.name) == wanted]
    return [m for m in (_match(e, shape_signature(e), actual) for e in candidates) if m is not None]


SOURCE_PREFERENCE = {"classic": 0, "torchvision": 1, "timm": 2}


def same_function(matches: list[ArchMatch], state_dict: dict, entries_by_name: dict) -> bool:
    """Whether every candidate, loaded with these weights, computes the same outputs.

    Entries can share every key and shape yet differ in padding, activation or pooling
    (timm's tf_ variants, blur pooling): load the user's weights into each and compare one
    seeded batch. Equal outputs within fp32 rounding means the choice does not matter.
    """
    import torch

    outputs = []
    first = entries_by_name[matches[0].name]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, first.channels, first.height, first.width), generator=generator)
    for match in matches:
        entry = entries_by_name[match.name]
        try:
            model = entry.build(num_classes=match.num_classes)
            model.load_state_dict(state_dict, strict=True)
            with torch.no_grad():
                out = model.float().eval()(x)
        except Exception:  # noqa: BLE001 - a candidate that cannot run these weights is a different function
            return False
        out = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(out, torch.Tensor):
            return False
        outputs.append(out.double())
    scale = float(outputs[0].abs().max()) + 1e-12
    return all(o.shape == outputs[0].shape and float((o - outputs[0]).abs().max()) <= 1e-5 * scale + 1e-6 for o in outputs[1:])


def preferred(matches: list[ArchMatch], entries_by_name: dict) -> ArchMatch:
    """Among equivalent candidates, the built-in entry before timm's."""
    return min(matches, key=lambda m: SOURCE_PREFERENCE.get(entries_by_name[m.name].source, 9))
