"""Load any checkpoint form people save into an eval-mode nn.Module plus its ModelSpec.

Safe by default (``torch.load(weights_only=True)``, as timm does); a whole pickled module
is loaded only with ``trust_pickle=True``, because unpickling runs code from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import BadInputError, CheckpointError, first_line
from exporter.loading.arch_fit import Fit
from exporter.loading.checkpoint_read import read_checkpoint
from exporter.loading.modules import load_state_dict_strict
from exporter.loading.quantized_forms import place_fused_batchnorms
from exporter.spec import ModelSpec


@dataclass
class LoadedModel:
    """A ready reference model: eval mode, fp32, with the spec every artifact inherits."""

    module: Any
    spec: ModelSpec
    path: Path | None
    form: str
    arch_source: str
    notes: list[str] = field(default_factory=list)
    weights: str = "model"  # which weights of the file: "model", "ema", or the key/prefix asked for
    prefix: str = ""  # key prefix the network's weights sat under (a LightningModule attribute)
    left_out: list[str] = field(default_factory=list)  # keys of the file that are not the network's
    written_by: str | None = None  # the training tool whose layout was recognised
    dropped_outputs: list[str] = field(default_factory=list)  # outputs of forward left out by --outputs

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def check_finite(state_dict: dict) -> None:
    import torch

    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"the checkpoint has NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); "
            "the training run that saved it diverged"
        )


def _under(fused: dict[str, str], prefix: str) -> dict[str, str]:
    """The fused-BatchNorm map relative to the prefix the network's weights sat under."""
    if not prefix:
        return fused
    return {g[len(prefix) :]: c[len(prefix) :] for g, c in fused.items() if g.startswith(prefix) and c.startswith(prefix)}


def _module_tensors(module) -> list:
    try:
        return [*module.parameters(), *module.buffers()]
    except Exception:  # noqa: BLE001 - a module without the usual accessors says nothing about its dtype
        return []


def _reduced_precision(tensors) -> list[str]:
    """The half-precision dtypes (float16, bfloat16) among the floating-point weights, in a stable order."""
    import torch

    found = {t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()}
    return [name for dtype, name in ((torch.float16, "float16"), (torch.bfloat16, "bfloat16")) if dtype in found]


def _guess_channels(module) -> int:
    from torch import nn

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def load_checkpoint(
    path,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    trust_pickle: bool = False,
    spec_overrides: dict | None = None,
    weights: str = "model",
    progress=None,
    outputs: tuple[str, ...] | None = None,
    tasks: dict[str, str] | None = None,
) -> LoadedModel:
    """The one entry point: any checkpoint form -> LoadedModel (module in eval mode, fp32).

    ``weights`` picks which weights of a training checkpoint: ``model`` (default), ``ema``, a
    top-level key, or a key prefix ending in '.' (``model.`` of a Lightning checkpoint).
    ``outputs`` keeps a subset of what forward returns (``--outputs out``); ``tasks`` overrides
    the task an output's shape suggests (``--task``, see exporter/outputs.py).
    """
    from exporter import sources

    path = Path(path)
    raw = read_checkpoint(path, trust_pickle=trust_pickle, weights=weights)
    if weights != "model" and not weights.endswith(".") and raw.weights != weights:
        raise CheckpointError(f"{path} ({raw.form}) holds one set of weights: there are no {weights!r} weights to choose")
    # builder arguments the file records apply to its own architecture, not to one given by --arch
    arch_kwargs = {**({} if arch else raw.hints.arch_kwargs), **(arch_kwargs or {})}
    overrides = dict(spec_overrides or {})
    meta_spec = dict(raw.hints.spec)
    if raw.module is not None:
        fit = _fit_module(raw, path, arch, arch_kwargs)
    else:
        fit = _fit_state_dict(raw, path, arch, arch_kwargs, weights, progress)
    notes = [*raw.notes, *fit.notes]
    stored = _reduced_precision(raw.state_dict.values() if raw.state_dict is not None else _module_tensors(fit.module))
    if stored:
        notes.append(
            f"weights stored as {' and '.join(stored)} were upcast to float32 (the reference model and every artifact are fp32)"
        )
    module = fit.module.float().eval()
    said = overrides.get("input_shape") or meta_spec.get("input_shape") or getattr(module, "input_shape", None)
    if fit.entry is None and fit.arch_source == "--arch (user code)" and not said:
        found = probe_input_shape(module, notes)
        if found is not None:
            meta_spec["input_shape"] = found
    spec = _resolve_spec(module, fit.name, fit.entry, meta_spec, overrides, arch_kwargs)
    known = sources.output_tasks(module)  # what the module's ecosystem says its outputs are (a backbone's features)
    tasks = {**known, **raw.hints.tasks, **(tasks or {})}  # what the source knows, unless --task says otherwise
    # a registry entry's class count is the classifier's; a backbone (its source says so) has none
    classes_given = (fit.entry is not None and not known) or "num_classes" in overrides or "num_classes" in meta_spec
    labels = overrides.get("labels") or meta_spec.get("labels")
    module, spec, dropped = _resolve_outputs(module, spec, outputs, tasks, classes_given, labels)
    if dropped:
        notes.append(f"outputs left out (--outputs): {', '.join(dropped)}")
    return LoadedModel(
        module=module,
        spec=spec,
        path=path,
        form=raw.form,
        arch_source=fit.arch_source,
        notes=notes,
        weights=raw.weights,
        prefix=fit.prefix,
        left_out=fit.left_out,
        written_by=raw.written_by,
        dropped_outputs=dropped,
    )


def _fit_module(raw, path: Path, arch: str | None, arch_kwargs: dict) -> Fit:
    """A module the file holds: named by --arch, the file's hints or itself; a registry entry where one fits its keys."""
    from exporter import architectures
    from exporter.loading.arch_fit import unknown_arch

    module = raw.module
    arch_source = raw.hints.names[0][1] if raw.hints.names and not arch else raw.form
    name = arch or next((n for n, _ in raw.hints.names), None) or getattr(module, "original_name", None) or type(module).__name__
    entry = None
    if arch:
        entry = architectures.get(arch)
        if entry is None and ":" not in arch:
            raise unknown_arch(arch)
    if entry is None and not arch and not raw.hints.names:
        from exporter.loading.arch_inference import infer_architecture

        matches = infer_architecture(module.state_dict(), architectures.entries(), path.stem)
        if len(matches) == 1:
            entry = architectures.get(matches[0].name)
            name, arch_source = matches[0].name, f"{raw.form}; architecture inferred from keys and shapes"
            arch_kwargs.setdefault("num_classes", matches[0].num_classes)
    return Fit(module, name, entry, arch_source, {})


def _fit_state_dict(raw, path: Path, arch: str | None, arch_kwargs: dict, weights: str, progress) -> Fit:
    """A state_dict: the architecture it fits, built, with the weights loaded strictly."""
    from exporter.loading.arch_fit import fit_architecture

    assert raw.state_dict is not None  # read_checkpoint gives a module or a state_dict
    check_finite(raw.state_dict)
    fit = fit_architecture(raw.state_dict, path, arch, arch_kwargs, raw.hints, weights, progress)
    if raw.fused_batchnorms:
        fit.state_dict = place_fused_batchnorms(fit.module, fit.state_dict, _under(raw.fused_batchnorms, fit.prefix))
    if fit.num_classes is not None:
        arch_kwargs["num_classes"] = fit.num_classes
    if fit.prefix:
        shown = ", ".join(fit.left_out[:6]) + (" …" if len(fit.left_out) > 6 else "")
        fit.notes.append(
            f"network weights under prefix {fit.prefix!r}"
            + (f"; left out {len(fit.left_out)} other key(s): {shown}" if fit.left_out else "")
        )
    load_state_dict_strict(fit.module, fit.state_dict, fit.name)
    return fit


# The input sizes classic tutorials train at (MNIST 28, CIFAR 32, STL 96, ImageNet 224/227, Inception 299).
TUTORIAL_SIZES = (224, 28, 32, 64, 96, 128, 227, 256, 299)


def probe_input_shape(module, notes: list[str]) -> tuple[int, int, int] | None:
    """For user code without an input size: the one tutorial size the model runs at, if exactly one does.

    A model that runs at several sizes (global pooling) keeps the 224 default, and the note says so.
    """
    import torch

    channels = _guess_channels(module)
    runs = []
    for size in TUTORIAL_SIZES:
        try:
            with torch.no_grad():
                module(torch.zeros(2, channels, size, size))
            runs.append(size)
        except Exception:  # noqa: BLE001 - a size the model cannot take
            continue
    if len(runs) == 1:
        notes.append(f"no input size given: the model runs only at {runs[0]}x{runs[0]} of the sizes tried")
        return (channels, runs[0], runs[0])
    if len(runs) > 1:
        notes.append(
            f"no input size given and the model runs at several sizes ({', '.join(map(str, runs))}); "
            "using 224x224: pass --input-shape to say what it was trained at"
        )
    return None


def _resolve_spec(module, name: str, entry, meta_spec: dict, overrides: dict, arch_kwargs: dict) -> ModelSpec:
    """command line > checkpoint metadata > registry default (> what the module says about itself)."""
    if entry is not None:
        base = entry.spec(arch_kwargs.get("num_classes", entry.num_classes))
    else:
        cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
        # a shape from the command line or the checkpoint decides the channel count the default mean/std follow
        shape = (
            overrides.get("input_shape")
            or meta_spec.get("input_shape")
            or cfg.get("input_size")
            or getattr(module, "input_shape", None)
        )
        channels = _guess_channels(module)
        c, h, w = tuple(shape) if shape and len(shape) == 3 else (channels, 224, 224)
        mean = tuple(cfg.get("mean", ())) or ((0.5,) * c if c != 3 else (0.485, 0.456, 0.406))
        std = tuple(cfg.get("std", ())) or ((0.5,) * c if c != 3 else (0.229, 0.224, 0.225))
        base = ModelSpec(
            arch=name, num_classes=arch_kwargs.get("num_classes", 0) or 1, channels=c, height=h, width=w, mean=mean, std=std
        )
    merged = {**meta_spec, **{k: v for k, v in overrides.items() if v is not None}}
    merged.pop("labels", None)  # applied with the class count read off the outputs (_resolve_outputs)
    merged.pop("arch", None)
    merged.pop("outputs", None)
    return base.with_overrides(**merged)


def required_inputs(module) -> list[str]:
    """The names of forward's parameters that have no default (a Siamese net: two), or [] when it cannot tell."""
    import inspect

    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in positional and p.default is inspect.Parameter.empty]


def _resolve_outputs(module, spec: ModelSpec, wanted, tasks, classes_given: bool, labels=None):
    """One forward pass at the spec's shape: a wrong input size fails here with a clear message, and
    what forward returns becomes the spec's named outputs (the module is wrapped to return them).

    Returns (module, spec with outputs and num_classes, names dropped by ``wanted``).
    """
    from dataclasses import replace as _replace

    import torch

    from exporter.flat_model import flat_module
    from exporter.outputs import describe, flatten, select

    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *spec.input_shape))
    except Exception as exc:
        inputs = required_inputs(module)
        if len(inputs) > 1:
            raise BadInputError(
                f"the model takes {len(inputs)} inputs (forward({', '.join(inputs)})); cnnexport exports and verifies "
                "single-input image models: wrap it in a module whose forward takes one image batch"
            ) from None
        raise BadInputError(
            f"the model does not run on input of shape (N, {', '.join(map(str, spec.input_shape))}): "
            f"{first_line(exc)}; pass --input-shape C,H,W"
        ) from exc
    found, dropped = select(flatten(out, batch=2), wanted)
    described = describe(found, tasks)
    first_classes = next((o for o in described if o.classes is not None), None)
    if first_classes is None or first_classes.classes is None:
        # no output shows a class count (end-to-end detection rows): the labels, where known, do
        num_classes = spec.num_classes if classes_given else len(labels or ())
    elif not classes_given:
        num_classes = first_classes.classes
    elif first_classes.classes != spec.num_classes:
        per = "image" if tasks.get(first_classes.task).CLASS_PER_SAMPLE else "pixel"
        raise BadInputError(
            f"the model outputs {first_classes.classes} classes per {per} "
            f"(output {first_classes.name!r}) but the spec says {spec.num_classes} classes"
        )
    else:
        num_classes = spec.num_classes
    labels = tuple(labels) if labels is not None else None
    if labels is not None and len(labels) != num_classes:
        raise BadInputError(f"the labels list has {len(labels)} entries but the model has {num_classes} classes")
    spec = _replace(spec, num_classes=num_classes, outputs=described, labels=labels)
    return flat_module(module, found), spec, dropped
