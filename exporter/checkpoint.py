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

STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "net", "state_dict_ema", "model_ema")
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


def read_checkpoint(path: Path, trust_pickle: bool = False) -> RawCheckpoint:
    """Read the file into a state_dict or a module, saying clearly why a file is refused."""
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the checkpoint file")
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
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        pickled = False
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
        pickled = True
    return _interpret(path, obj, pickled)


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
    return RawCheckpoint(form="safetensors", state_dict=state_dict, metadata=meta, notes=notes)


def _metadata_from_strings(metadata: dict[str, str]) -> dict:
    """safetensors metadata is str->str; decode JSON values where they parse."""
    out: dict = {}
    for key, value in metadata.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def _interpret(path: Path, obj: Any, pickled: bool) -> RawCheckpoint:
    from torch import nn

    if isinstance(obj, nn.Module):
        return RawCheckpoint(form="pickled-module", module=obj)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a model: expected a state_dict, a training dict or a module"
        )
    if _is_tensor_dict(obj):
        state_dict, stripped = strip_prefixes(obj)
        return RawCheckpoint(form="state_dict", state_dict=state_dict, notes=[f"stripped prefix {p!r}" for p in stripped])
    metadata = {k: v for k, v in obj.items() if isinstance(v, (str, int, float, list, tuple)) and k not in STATE_DICT_KEYS}
    for key in STATE_DICT_KEYS:
        value = obj.get(key)
        if isinstance(value, nn.Module):
            return RawCheckpoint(form=f"training-dict[{key}] with pickled module", module=value, metadata=metadata)
        if _is_tensor_dict(value):
            state_dict, stripped = strip_prefixes(value)
            others = sorted(k for k in obj if k != key)
            notes = [f"stripped prefix {p!r}" for p in stripped]
            if others:
                notes.append("also holds: " + ", ".join(map(str, others[:8])))
            return RawCheckpoint(form=f"training-dict[{key}]", state_dict=state_dict, metadata=metadata, notes=notes)
    keys = ", ".join(map(str, list(obj)[:8]))
    raise CheckpointError(
        f"{path} is a dict without model weights (keys: {keys}); expected a state_dict or one of "
        + ", ".join(STATE_DICT_KEYS)
    )


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


def _spec_from_metadata(metadata: dict) -> dict:
    """Spec fields a training dict may carry (arch, num_classes, input_shape, mean, std, labels)."""
    out: dict = {}
    if isinstance(metadata.get("num_classes"), int):
        out["num_classes"] = metadata["num_classes"]
    shape = metadata.get("input_shape") or metadata.get("input_size")
    if isinstance(shape, (list, tuple)) and len(shape) in (3, 4):
        out["input_shape"] = tuple(int(v) for v in shape[-3:])
    for key in ("mean", "std"):
        if isinstance(metadata.get(key), (list, tuple)):
            out[key] = tuple(float(v) for v in metadata[key])
    for key in ("labels", "classes", "class_names"):
        if isinstance(metadata.get(key), (list, tuple)):
            out["labels"] = tuple(str(v) for v in metadata[key])
    return out


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
) -> LoadedModel:
    """The one entry point: any checkpoint form -> LoadedModel (module in eval mode, fp32)."""
    import architectures

    path = Path(path)
    raw = read_checkpoint(path, trust_pickle=trust_pickle)
    arch_kwargs = dict(arch_kwargs or {})
    overrides = dict(spec_overrides or {})
    notes = list(raw.notes)
    meta_spec = _spec_from_metadata(raw.metadata)
    hinted = raw.metadata.get("arch") if isinstance(raw.metadata.get("arch"), str) else None

    entry = None
    if raw.module is not None:
        module = raw.module
        arch_source = raw.form
        name = arch or getattr(module, "original_name", None) or type(module).__name__
        entry = architectures.get(arch) if arch else None
        if raw.form == "exported-program":
            module = ExportedProgramModule(module)
            example = raw.metadata.get("example_inputs")
            if example and example[0]:
                meta_spec.setdefault("input_shape", tuple(example[0][0].shape[1:]))
        if entry is None and not arch:
            from exporter.arch_inference import infer_architecture

            matches = infer_architecture(module.state_dict(), architectures.entries(), path.stem)
            if len(matches) == 1:
                entry = architectures.get(matches[0].name)
                name, arch_source = entry.name, f"{raw.form}; architecture inferred from keys and shapes"
                arch_kwargs.setdefault("num_classes", matches[0].num_classes)
    else:
        state_dict = raw.state_dict
        check_finite(state_dict)
        if arch and architectures.get(arch) is None and ":" in arch:
            module = resolve_user_arch(arch, arch_kwargs)
            name, arch_source = arch, "--arch (user code)"
        else:
            name = arch or hinted
            arch_source = "--arch" if arch else "checkpoint metadata"
            if name is not None:
                entry = architectures.get(name)
                if entry is None:
                    raise ArchitectureError(
                        f"unknown architecture {name!r}; run `cnnexport architectures` for the registry, "
                        "or pass --arch file.py:ClassName"
                    )
                if "num_classes" not in arch_kwargs:
                    arch_kwargs["num_classes"] = meta_spec.get("num_classes") or _infer_num_classes(entry, state_dict)
            else:
                from exporter.arch_inference import infer_architecture

                matches = infer_architecture(state_dict, architectures.entries(), path.stem)
                if not matches:
                    raise ArchitectureError(
                        f"no registry architecture has the keys and shapes of {path.name}; "
                        "pass --arch NAME or --arch file.py:ClassName"
                    )
                if len(matches) > 1:
                    raise ArchitectureError(
                        f"{path.name} fits several architectures ({', '.join(m.name for m in matches)}); pass --arch"
                    )
                entry = architectures.get(matches[0].name)
                name, arch_source = entry.name, "inferred from keys and shapes"
                arch_kwargs.setdefault("num_classes", matches[0].num_classes)
            try:
                module = entry.build(**arch_kwargs)
            except Exception as exc:  # noqa: BLE001
                raise ArchitectureError(f"building {entry.name} with {arch_kwargs} failed: {first_line(exc)}") from exc
        load_state_dict_strict(module, state_dict, name)

    module = module.float().eval()
    spec = _resolve_spec(module, name, entry, meta_spec, overrides, arch_kwargs)
    _smoke_test(module, spec)
    return LoadedModel(module=module, spec=spec, path=path, form=raw.form, arch_source=arch_source, notes=notes)


def _infer_num_classes(entry, state_dict: dict) -> int:
    from exporter.arch_inference import _classes_from_mismatch, registry_signatures

    expected = registry_signatures([entry])[entry.name]
    actual = {k: tuple(v.shape) for k, v in state_dict.items()}
    if expected is None or expected.keys() != actual.keys():
        return entry.num_classes  # strict loading will list the differences
    classes = _classes_from_mismatch(expected, actual)
    return classes if classes and classes > 0 else entry.num_classes


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
