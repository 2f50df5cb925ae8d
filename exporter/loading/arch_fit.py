"""Which architecture a state_dict belongs to, and which of its keys are the network's.

Order: ``--arch``; then the names the file itself gives (torchvision/timm ``args.model``,
Lightning ``hyper_parameters``, safetensors metadata); then inference from keys and shapes
over the registry (timm's entries too, when installed). Each is tried on the whole state_dict
and on its sub-dictionaries under a common prefix (a LightningModule keeps the network under
``model.`` beside its loss buffers). Several candidates are accepted only when they compute
the same function on these weights; otherwise the user is asked to choose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import ArchitectureError, BackendUnavailable, first_line
from exporter.loading.training_formats import Hints, prefix_views


@dataclass
class Fit:
    module: Any
    name: str
    entry: Any  # the registry entry, None for user code
    arch_source: str
    state_dict: dict  # the network's own keys (prefix removed)
    prefix: str = ""
    left_out: list[str] = field(default_factory=list)
    num_classes: int | None = None
    notes: list[str] = field(default_factory=list)


def _views(state_dict: dict, weights: str) -> list[tuple[str, dict]]:
    """The whole dict first, then sub-dicts by prefix; ``--weights PREFIX.`` picks one."""
    if weights.endswith("."):
        chosen = [(p, v) for p, v in prefix_views(state_dict) if p == weights]
        if not chosen:
            raise ArchitectureError(f"no weights are under the prefix {weights!r} in the checkpoint")
        return chosen
    return [("", state_dict), *prefix_views(state_dict)]


def _fit(module, name, entry, source, state_dict, prefix, num_classes=None, notes=()) -> Fit:
    left_out = sorted(k for k in state_dict if not k.startswith(prefix)) if prefix else []
    view = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)} if prefix else state_dict
    return Fit(module, name, entry, source, view, prefix, left_out, num_classes, list(notes))


def _build(entry, num_classes: int, arch_kwargs: dict):
    """The entry with these builder arguments; ``num_classes`` is the one decided by the fit."""
    kwargs = {**arch_kwargs, "num_classes": num_classes}
    try:
        return entry.build(**kwargs)
    except Exception as exc:
        raise ArchitectureError(f"building {entry.name} with {kwargs} failed: {first_line(exc)}") from exc


def unknown_arch(name: str) -> ArchitectureError | BackendUnavailable:
    from exporter import architectures
    from exporter.architectures import timm_models

    if timm_models.timm_name(name) is not None and not architectures.timm_available():
        return BackendUnavailable(f"architecture {name!r} is timm's, and timm is not installed: {timm_models.INSTALL_HINT}")
    return ArchitectureError(
        f"unknown architecture {name!r}; run `cnnexport architectures` for the registry "
        "(`--source timm` for timm's), or pass --arch file.py:ClassName"
    )


def fit_architecture(
    state_dict: dict,
    path: Path,
    arch: str | None,
    arch_kwargs: dict,
    hints: Hints,
    weights: str = "model",
    progress: Callable[[str], None] | None = None,
) -> Fit:
    from exporter import architectures
    from exporter.loading.arch_inference import match_entry
    from exporter.loading.modules import resolve_user_arch

    views = _views(state_dict, weights)
    if arch and ":" in arch and architectures.get(arch) is None and not arch.startswith("timm:"):
        module = resolve_user_arch(arch, arch_kwargs)
        own = set(module.state_dict())
        prefix = next((p for p, v in views if set(v) == own), views[0][0])
        return _fit(module, arch, None, "--arch (user code)", state_dict, prefix)

    names = [(arch, "--arch")] if arch else hints.names
    notes: list[str] = []
    for name, where in names:
        entry = architectures.get(name)
        if entry is None:
            if where == "--arch":
                raise unknown_arch(name)
            notes.append(f"{where} names {name!r}, which is not a registry architecture")
            continue
        # a bare name both registries know: a Lightning module built with timm.create_model logs timm's
        alternatives = [entry]
        if ":" not in name and entry.source != "timm" and (timm_entry := architectures.get("timm:" + name)) is not None:
            alternatives.append(timm_entry)
        for candidate in alternatives:
            for prefix, view in views:
                found = match_entry(candidate, view)
                if found is not None:
                    classes = arch_kwargs.get("num_classes", found.num_classes)
                    module = _build(candidate, classes, arch_kwargs)
                    return _fit(module, candidate.name, candidate, where, state_dict, prefix, classes, notes)
        # the named architecture does not fit: build it anyway so strict loading lists the differences
        classes = arch_kwargs.get("num_classes") or hints.spec.get("num_classes") or entry.num_classes
        module = _build(entry, classes, arch_kwargs)
        own = set(module.state_dict())
        closest = max(views, key=lambda pv: len(own & set(pv[1])))[0]  # list the differences where they are fewest
        return _fit(module, entry.name, entry, where, state_dict, closest, classes, notes)
    return _inferred(state_dict, path, views, arch_kwargs, notes, progress)


def _with_aux_head(views, candidates, arch_kwargs: dict) -> list:
    """torchvision segmentation weights trained with --aux-loss carry an aux_classifier the default build lacks.

    Only the few segmentation entries are rebuilt with ``aux_loss=True`` (the key fingerprints are
    of default builds); a fit sets ``aux_loss`` for the build that follows.
    """
    from dataclasses import replace
    from functools import partial

    from exporter.loading.arch_inference import match_entry

    for prefix, view in views:
        if not any(k.startswith("aux_classifier.") for k in view):
            continue
        segmenters = [replace(e, builder=partial(e.builder, aux_loss=True)) for e in candidates if e.task == "segment"]
        matches = [m for m in (match_entry(e, view) for e in segmenters) if m is not None]
        if matches:
            arch_kwargs["aux_loss"] = True
            return [(prefix, view, matches)]
    return []


def _inferred(state_dict, path: Path, views, arch_kwargs: dict, notes: list, progress) -> Fit:
    from exporter import architectures
    from exporter.loading.arch_inference import infer_architecture, preferred, same_function

    candidates = architectures.entries(include_timm=True)
    by_name = {e.name: e for e in candidates}
    fitting: list[tuple[str, dict, list]] = []
    for prefix, view in views:
        matches = infer_architecture(view, candidates, path.stem, progress)
        if matches:
            fitting.append((prefix, view, matches))
            if prefix == "":
                break  # the whole dict is a network: its sub-modules are not candidates
    if not fitting:
        fitting = _with_aux_head(views, candidates, arch_kwargs)
    if not fitting:
        raise ArchitectureError(
            f"no registry architecture has the keys and shapes of {path.name}; "
            "pass --arch NAME (`cnnexport architectures`) or --arch file.py:ClassName"
        )
    if len(fitting) > 1:
        shown = ", ".join(f"{p!r} ({m[0].name})" for p, _, m in fitting)
        raise ArchitectureError(
            f"{path.name} holds networks under several prefixes: {shown}; pass --weights PREFIX. to choose one"
        )
    prefix, view, matches = fitting[0]
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches)
        if not same_function(matches, view, by_name):
            raise ArchitectureError(
                f"{path.name} fits several architectures that compute different functions ({names}); "
                "pass --arch with the one it was trained as"
            )
        chosen = preferred(matches, by_name)
        others = ", ".join(m.name for m in matches if m is not chosen)
        notes.append(f"also fits {others}, which computes the same outputs on these weights")
    else:
        chosen = matches[0]
    entry = by_name[chosen.name]
    classes = arch_kwargs.get("num_classes", chosen.num_classes)
    module = _build(entry, classes, arch_kwargs)
    source = "inferred from keys and shapes" + (f" under prefix {prefix!r}" if prefix else "")
    return _fit(module, entry.name, entry, source, state_dict, prefix, classes, notes)
