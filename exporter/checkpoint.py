"""Load any checkpoint form people save into an eval-mode nn.Module plus its ModelSpec.

Safe by default (``torch.load(weights_only=True)``, as timm does); a whole pickled module
is loaded only with ``trust_pickle=True``, because unpickling runs code from the file.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import ArchitectureError, BadInputError, CheckpointError, first_line
from exporter.spec import ModelSpec
from exporter.training_formats import EMA_KEYS, MODEL_KEYS, Hints, spec_from_metadata

PREFIXES = ("module.", "_orig_mod.")


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

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


@dataclass
class RawCheckpoint:
    form: str
    state_dict: dict | None = None
    module: Any = None
    metadata: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    hints: Hints = field(default_factory=Hints)
    weights: str = "model"
    written_by: str | None = None


# --------------------------------------------------------------------------- reading


def _is_tensor_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_prefixes(state_dict: dict) -> tuple[dict, list[str]]:
    """Remove DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes (in any nesting).

    The per-module version numbers PyTorch keeps in ``state_dict._metadata`` travel along,
    re-keyed the same way: some modules (torchvision's MNASNet) refuse weights without them.
    """
    from collections import OrderedDict

    metadata = getattr(state_dict, "_metadata", None)
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if state_dict and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                if metadata is not None:
                    owner = prefix[:-1]
                    metadata = {("" if k == owner else k[len(prefix):]): v for k, v in metadata.items() if k == owner or k.startswith(prefix)}
                stripped.append(prefix)
                changed = True
    state_dict = OrderedDict(state_dict)
    if metadata is not None:
        state_dict._metadata = metadata
    return state_dict, stripped


def _refused_pickle_message(path: Path, exc: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" (it references {found.group(1)})" if found else ""
    return (
        f"{path} contains pickled Python objects{what}; unpickling it could run arbitrary code. "
        "Re-run with --trust-pickle only if you trust where the file came from, or save model.state_dict() instead"
    )


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def read_checkpoint(path: Path, trust_pickle: bool = False, weights: str = "model") -> RawCheckpoint:
    """Read the file (or Hugging Face folder) into a state_dict or a module, saying clearly why one is refused."""
    import torch

    from exporter.safe_pickle import load_weights_only

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        from exporter.hf_folder import read_folder

        return read_folder(path, weights)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the save was probably interrupted")

    with open(path, "rb") as fh:
        head = fh.read(16)

    if path.suffix == ".safetensors" or (len(head) > 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)):
        return _read_safetensors(path)

    names = _zip_names(path)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names) and not any(
        n.endswith("serialized_exported_program.json") or "/models/" in n for n in names
    ):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises many types here
            raise CheckpointError(f"{path} looks like a TorchScript archive but cannot be loaded ({first_line(exc)})") from exc
        return RawCheckpoint(form="torchscript", module=module)
    # decided by content, not by the .pt2 suffix: a torch.save file named .pt2 goes through the safe loader below
    if any(n.endswith("serialized_exported_program.json") or n.endswith("archive_format") for n in names):
        try:
            with _quiet_logger("torch.export"):  # it logs a traceback before raising
                program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path} looks like an exported program (.pt2) but cannot be loaded ({first_line(exc)})") from exc
        _require_dynamic_batch(program, path)
        return RawCheckpoint(form="exported-program", module=program.module(), metadata={"example_inputs": program.example_inputs})

    try:
        obj = load_weights_only(str(path))
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        if not head.startswith(b"PK") and not _is_pickle_stream(path):
            # random or foreign bytes also fail the weights-only unpickler: say what the file is not,
            # rather than suggest --trust-pickle for something that holds no pickled objects
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: it is neither a torch.save file (zip or pickle) nor safetensors"
            ) from exc
        if "Weights only load failed" not in text:
            raise CheckpointError(_unreadable_message(path, exc)) from exc
        if not trust_pickle:
            raise CheckpointError(_refused_pickle_message(path, exc)) from exc
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except ModuleNotFoundError as exc2:
            raise CheckpointError(
                f"{path} is a pickled model whose code lives in module '{exc2.name}', which cannot be imported here; "
                "run from the directory of that code (or add it to PYTHONPATH), or save a state_dict instead"
            ) from exc2
        except AttributeError as exc2:
            raise CheckpointError(
                f"{path} is a pickled model whose class cannot be found ({first_line(exc2)}); "
                "make its code importable, or save a state_dict instead"
            ) from exc2
        except Exception as exc2:  # noqa: BLE001
            raise CheckpointError(_unreadable_message(path, exc2)) from exc2
    return _interpret(path, obj, weights)


def _is_pickle_stream(path: Path) -> bool:
    """Whether the file starts with a complete pickle; parses opcodes only, runs nothing."""
    import pickletools

    try:
        with open(path, "rb") as fh:
            for _ in pickletools.genops(fh):
                pass
        return True
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
        return False


@contextlib.contextmanager
def _quiet_logger(name: str):
    import logging

    logger = logging.getLogger(name)
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def _require_dynamic_batch(program, path: Path) -> None:
    """A .pt2 saved with a fixed batch size can never become an artifact with a dynamic batch axis."""
    import torch

    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    value = inputs[0].meta.get("val") if inputs else None
    if value is not None and value.ndim > 0 and not isinstance(value.shape[0], torch.SymInt):
        raise CheckpointError(
            f"{path} was exported with a fixed batch size of {value.shape[0]}; re-export it with "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}, or pass a state_dict checkpoint with --arch"
        )


def _unreadable_message(path: Path, exc: Exception) -> str:
    text = str(exc)
    reason = first_line(exc).split(". ")[0]
    if "zip" in text.lower() or "central directory" in text.lower() or "EOF" in text or isinstance(exc, EOFError):
        return f"{path} is truncated or corrupt and cannot be read as a PyTorch checkpoint ({reason})"
    return f"{path} is not a PyTorch checkpoint that can be read ({reason})"


def _read_safetensors(path: Path) -> RawCheckpoint:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        state_dict = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable safetensors file ({first_line(exc)})") from exc
    meta = _metadata_from_strings(metadata)
    state_dict, stripped = strip_prefixes(dict(state_dict))
    notes = [f"stripped prefix {p!r}" for p in stripped]
    hints = Hints(spec=spec_from_metadata(meta))
    if isinstance(meta.get("arch"), str):
        hints.names.append((meta["arch"], "checkpoint metadata"))
    return RawCheckpoint(form="safetensors", state_dict=state_dict, metadata=meta, notes=notes, hints=hints)


def _metadata_from_strings(metadata: dict[str, str]) -> dict:
    """safetensors metadata is str->str; decode JSON values where they parse."""
    out: dict = {}
    for key, value in metadata.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def _interpret(path: Path, obj: Any, weights: str = "model") -> RawCheckpoint:
    from torch import nn

    from exporter.training_formats import clean_ema, read_hints, select_weights, written_by

    if isinstance(obj, nn.Module):
        return RawCheckpoint(form="pickled-module", module=obj)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a model: expected a state_dict, a training dict or a module"
        )
    if _is_tensor_dict(obj):
        if weights != "model" and not weights.endswith("."):
            raise CheckpointError(f"{path} is a plain state_dict: it has no {weights!r} weights to choose")
        state_dict, stripped = strip_prefixes(obj)
        return RawCheckpoint(form="state_dict", state_dict=state_dict, notes=[f"stripped prefix {p!r}" for p in stripped])
    key, value = select_weights(obj, "model" if weights.endswith(".") else weights, lambda v: isinstance(v, nn.Module) or _is_tensor_dict(v))
    if value is None:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(
            f"{path} is a dict without model weights (keys: {keys}); expected a state_dict or one of "
            + ", ".join(MODEL_KEYS + EMA_KEYS)
        )
    hints, tool = read_hints(obj), written_by(obj)
    chosen = "ema" if key in EMA_KEYS else weights if weights not in ("model", "ema") else "model"
    if isinstance(value, nn.Module):
        return RawCheckpoint(form=f"training-dict[{key}] with pickled module", module=value, hints=hints, weights=chosen, written_by=tool)
    notes = []
    if key in EMA_KEYS:
        value, dropped = clean_ema(value)
        notes += dropped
    state_dict, stripped = strip_prefixes(value)
    notes += [f"stripped prefix {p!r}" for p in stripped]
    others = sorted(str(k) for k in obj if k != key)
    if others:
        notes.append("also holds: " + ", ".join(others[:8]) + (" …" if len(others) > 8 else ""))
    unused_ema = [k for k in EMA_KEYS if k in obj and k != key]
    if unused_ema and chosen == "model":
        notes.append(f"EMA weights under {unused_ema[0]!r} not used (pass --weights ema for them)")
    return RawCheckpoint(form=f"training-dict[{key}]", state_dict=state_dict, notes=notes + hints.notes, hints=hints, weights=chosen, written_by=tool)


def _exported_program_module_class():
    from torch import nn

    class ExportedProgramModule(nn.Module):
        """Wraps ``ExportedProgram.module()``, whose train()/eval() raise, so it behaves like a model."""

        def __init__(self, graph_module):
            super().__init__()
            self.graph_module = graph_module

        def train(self, mode: bool = True):
            self.training = mode
            return self

        def forward(self, x):
            return self.graph_module(x)

    return ExportedProgramModule


def ExportedProgramModule(graph_module):  # noqa: N802 - behaves like a class for callers
    return _exported_program_module_class()(graph_module)


# --------------------------------------------------------------------------- architectures


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
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(file.parent.resolve()))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code can raise anything
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
    except Exception as exc:  # noqa: BLE001
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
        state_dict._metadata = own._metadata
    try:
        module.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{arch} refused the checkpoint's weights: {first_line(exc)}") from exc


def check_finite(state_dict: dict) -> None:
    import torch

    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"the checkpoint has NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); "
            "the training run that saved it diverged"
        )


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
) -> LoadedModel:
    """The one entry point: any checkpoint form -> LoadedModel (module in eval mode, fp32).

    ``weights`` picks which weights of a training checkpoint: ``model`` (default), ``ema``, a
    top-level key, or a key prefix ending in '.' (``model.`` of a Lightning checkpoint).
    """
    import architectures

    from exporter.arch_fit import fit_architecture, unknown_arch

    path = Path(path)
    raw = read_checkpoint(path, trust_pickle=trust_pickle, weights=weights)
    if weights != "model" and not weights.endswith(".") and raw.weights != weights:
        raise CheckpointError(f"{path} ({raw.form}) holds one set of weights: there are no {weights!r} weights to choose")
    # builder arguments the file records apply to its own architecture, not to one given by --arch
    arch_kwargs = {**({} if arch else raw.hints.arch_kwargs), **(arch_kwargs or {})}
    overrides = dict(spec_overrides or {})
    notes = list(raw.notes)
    meta_spec = dict(raw.hints.spec)
    prefix, left_out = "", []

    entry = None
    if raw.module is not None:
        module = raw.module
        arch_source = raw.hints.names[0][1] if raw.hints.names and not arch else raw.form
        name = arch or next((n for n, _ in raw.hints.names), None) or getattr(module, "original_name", None) or type(module).__name__
        if arch:
            entry = architectures.get(arch)
            if entry is None and ":" not in arch:
                raise unknown_arch(arch)
        if raw.form == "exported-program":
            module = ExportedProgramModule(module)
            example = raw.metadata.get("example_inputs")
            if example and example[0]:
                meta_spec.setdefault("input_shape", tuple(example[0][0].shape[1:]))
        if entry is None and not arch and not raw.hints.names:
            from exporter.arch_inference import infer_architecture

            matches = infer_architecture(module.state_dict(), architectures.entries(), path.stem)
            if len(matches) == 1:
                entry = architectures.get(matches[0].name)
                name, arch_source = entry.name, f"{raw.form}; architecture inferred from keys and shapes"
                arch_kwargs.setdefault("num_classes", matches[0].num_classes)
    else:
        check_finite(raw.state_dict)
        fit = fit_architecture(raw.state_dict, path, arch, arch_kwargs, raw.hints, weights, progress)
        module, name, entry, arch_source = fit.module, fit.name, fit.entry, fit.arch_source
        prefix, left_out = fit.prefix, fit.left_out
        notes += fit.notes
        if fit.num_classes is not None:
            arch_kwargs["num_classes"] = fit.num_classes
        if prefix:
            shown = ", ".join(left_out[:6]) + (" …" if len(left_out) > 6 else "")
            notes.append(f"network weights under prefix {prefix!r}" + (f"; left out {len(left_out)} other key(s): {shown}" if left_out else ""))
        load_state_dict_strict(module, fit.state_dict, name)

    module = module.float().eval()
    said = overrides.get("input_shape") or meta_spec.get("input_shape") or getattr(module, "input_shape", None)
    probe = entry is None and arch_source == "--arch (user code)" and not said
    if probe:
        found = probe_input_shape(module, notes)
        if found is not None:
            meta_spec["input_shape"] = found
    spec = _resolve_spec(module, name, entry, meta_spec, overrides, arch_kwargs)
    _smoke_test(module, spec)
    return LoadedModel(
        module=module, spec=spec, path=path, form=raw.form, arch_source=arch_source, notes=notes,
        weights=raw.weights, prefix=prefix, left_out=left_out, written_by=raw.written_by,
    )


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
        notes.append(f"no input size given and the model runs at several sizes ({', '.join(map(str, runs))}); "
                     "using 224x224: pass --input-shape to say what it was trained at")
    return None


def _resolve_spec(module, name: str, entry, meta_spec: dict, overrides: dict, arch_kwargs: dict) -> ModelSpec:
    """command line > checkpoint metadata > registry default (> what the module says about itself)."""
    if entry is not None:
        base = entry.spec(arch_kwargs.get("num_classes", entry.num_classes))
    else:
        cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
        # a shape from the command line or the checkpoint decides the channel count the default mean/std follow
        shape = overrides.get("input_shape") or meta_spec.get("input_shape") or cfg.get("input_size") or getattr(module, "input_shape", None)
        channels = _guess_channels(module)
        c, h, w = tuple(shape) if shape and len(shape) == 3 else (channels, 224, 224)
        mean = tuple(cfg.get("mean", ())) or ((0.5,) * c if c != 3 else (0.485, 0.456, 0.406))
        std = tuple(cfg.get("std", ())) or ((0.5,) * c if c != 3 else (0.229, 0.224, 0.225))
        base = ModelSpec(arch=name, num_classes=arch_kwargs.get("num_classes", 0) or 1, channels=c, height=h, width=w, mean=mean, std=std)
    merged = {**meta_spec, **{k: v for k, v in overrides.items() if v is not None}}
    labels = merged.pop("labels", None)
    merged.pop("arch", None)
    spec = base.with_overrides(**merged)
    if entry is None and "num_classes" not in merged:
        spec = spec.with_overrides(num_classes=_output_classes(module, spec))
    if labels is not None:
        spec = spec.with_overrides(labels=labels)
    return spec


def _output_classes(module, spec: ModelSpec) -> int:
    import torch

    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *spec.input_shape))
    except Exception:  # noqa: BLE001 - the smoke test reports this properly
        return spec.num_classes
    out = out[0] if isinstance(out, (tuple, list)) else out
    return int(out.shape[-1]) if hasattr(out, "shape") and out.ndim >= 1 else spec.num_classes


def _smoke_test(module, spec: ModelSpec) -> None:
    """One forward pass at the spec's shape, so a wrong input size fails here with a clear message."""
    import torch

    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *spec.input_shape))
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(
            f"the model does not run on input of shape (N, {', '.join(map(str, spec.input_shape))}): "
            f"{first_line(exc)}; pass --input-shape C,H,W"
        ) from exc
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise BadInputError(f"the model returns {type(out).__name__}; cnnexport needs a model that returns a logits tensor")
    if out.shape[-1] != spec.num_classes:
        raise BadInputError(
            f"the model outputs {out.shape[-1]} values per image but the spec says {spec.num_classes} classes"
        )
