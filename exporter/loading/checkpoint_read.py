"""Read a checkpoint file (or model folder) into a RawCheckpoint: a state_dict or a module, plus hints.

Every form people save: safetensors, torch.save zip or legacy pickle (weights-only unless
``trust_pickle``), TorchScript archives, exported programs (.pt2), training dicts. Each refusal
says why. exporter.loading.checkpoint turns the result into a LoadedModel.
"""

from __future__ import annotations

import contextlib
import json
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from exporter.errors import CheckpointError, first_line
from exporter.loading.quantized_forms import (
    QUANTIZED_ADVICE,
    drop_observers,
    is_quantized_state_dict,
    prepared_note,
    quantized_globals,
    quantized_module_names,
    unfuse_batchnorms,
)
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import EMA_KEYS, MODEL_KEYS, Hints, spec_from_metadata

PREFIXES = ("module.", "_orig_mod.")


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
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                if metadata is not None:
                    owner = prefix[:-1]
                    metadata = {
                        ("" if k == owner else k[len(prefix) :]): v
                        for k, v in metadata.items()
                        if k == owner or k.startswith(prefix)
                    }
                stripped.append(prefix)
                changed = True
    state_dict = OrderedDict(state_dict)
    if metadata is not None:
        state_dict._metadata = metadata  # type: ignore[attr-defined]  # torch's per-module versions ride on the dict
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


def zip_layout(names: list[str]) -> str | None:
    """What wrote a zip, from the archive's own layout (never from the user's module paths inside it).

    Every writer puts its records under one top-level folder (the file's stem, or ``archive``):
    torch.export.save writes ``archive_format`` there (before torch 2.5,
    ``serialized_exported_program.json``), torch.jit.save ``constants.pkl`` and the ``code/`` of
    the scripted classes (which torch.load itself checks for), torch.save ``data.pkl`` alone.
    A TorchScript archive of torchvision's models holds ``code/__torch__/torchvision/models/...``
    and a user package may be called ``models`` or ``code``: only these top-level records count.
    Returns "exported-program", "torchscript", "torch.save" or None (not one of these).
    """
    if not names:
        return None
    top = names[0].split("/", 1)[0] + "/" if "/" in names[0] else ""
    own = {n[len(top) :] for n in names if n.startswith(top)}
    if "archive_format" in own or any(n.endswith("serialized_exported_program.json") for n in names):
        return "exported-program"
    if "constants.pkl" in own and any(n.startswith("code/") for n in own):
        return "torchscript"
    if "data.pkl" in own:
        return "torch.save"
    return None


def read_checkpoint(path: Path, trust_pickle: bool = False, weights: str = "model") -> RawCheckpoint:
    """Read the file into a state_dict or a module, saying clearly why one is refused (folders: hf_folder)."""
    import torch

    from exporter import sources
    from exporter.loading.safe_pickle import load_weights_only

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder; cnnexport reads folders saved by save_pretrained (exporter.loading.hf_folder.read_folder)"
        )
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the save was probably interrupted")

    with open(path, "rb") as fh:
        head = fh.read(16)

    if path.suffix == ".safetensors" or (len(head) > 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)):
        return _read_safetensors(path)

    layout = zip_layout(_zip_names(path))
    if layout == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises many types here
            raise CheckpointError(f"{path} looks like a TorchScript archive but cannot be loaded ({first_line(exc)})") from exc
        _refuse_quantized_module(path, module)
        return RawCheckpoint(form="torchscript", module=module)
    # decided by content, not by the .pt2 suffix: a torch.save file named .pt2 goes through the safe loader below
    if layout == "exported-program":
        try:
            with _quiet_logger("torch.export"):  # it logs a traceback before raising
                program = torch.export.load(str(path))
        except Exception as exc:
            raise CheckpointError(
                f"{path} looks like an exported program (.pt2) but cannot be loaded ({first_line(exc)})"
            ) from exc
        _require_dynamic_batch(program, path)
        return RawCheckpoint(
            form="exported-program", module=program.module(), metadata={"example_inputs": program.example_inputs}
        )

    named = _unsafe_globals(path) if head.startswith(b"PK") else []
    source = sources.find(named)  # a checkpoint source (exporter/sources/) reads its own files
    if source is not None:
        return source.read(path, named, weights)
    try:
        obj = load_weights_only(str(path))
    except Exception as exc:
        text = str(exc)
        if not head.startswith(b"PK") and not _is_pickle_stream(path):
            # random or foreign bytes also fail the weights-only unpickler: say what the file is not,
            # rather than suggest --trust-pickle for something that holds no pickled objects
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: it is neither a torch.save file (zip or pickle) nor safetensors"
            ) from exc
        if "Weights only load failed" not in text:
            raise CheckpointError(_unreadable_message(path, exc)) from exc
        quantized = quantized_globals(path)
        if quantized:
            # torch.save(model) after torch.ao convert: even unpickled (--trust-pickle) it is broken in torch itself
            raise CheckpointError(
                f"{path} holds a whole quantized model "
                f"(torch.ao converted: {', '.join(sorted(set(n.rsplit('.', 1)[-1] for n in quantized))[:4])}); "
                + QUANTIZED_ADVICE
            ) from exc
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
        except Exception as exc2:
            raise CheckpointError(_unreadable_message(path, exc2)) from exc2
    return _interpret(path, obj, weights)


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a torch.save zip's pickle names (opcodes only; nothing runs); [] for other files."""
    import torch

    if not zipfile.is_zipfile(path):
        return []
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - an odd zip: the generic reader says what is wrong with it
        return []


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
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({first_line(exc)})") from exc
    meta = _metadata_from_strings(metadata)
    state_dict, notes, fused = network_weights(path, dict(state_dict))
    hints = Hints(spec=spec_from_metadata(meta))
    if isinstance(meta.get("arch"), str):
        hints.names.append((meta["arch"], "checkpoint metadata"))
    return RawCheckpoint(
        form="safetensors", state_dict=state_dict, metadata=meta, notes=notes, hints=hints, fused_batchnorms=fused
    )


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

    from exporter.loading.training_formats import clean_ema, read_hints, select_weights, written_by

    if isinstance(obj, nn.Module):
        _refuse_quantized_module(path, obj)
        _refuse_meta_module(path, obj)
        return RawCheckpoint(form="pickled-module", module=obj)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a model: expected a state_dict, a training dict or a module"
        )
    for value in [obj, *(obj.get(k) for k in MODEL_KEYS + EMA_KEYS)]:
        if is_quantized_state_dict(value):
            raise CheckpointError(
                f"{path} holds a quantized (torch.ao converted) model's weights (int8 tensors with scale/zero_point); "
                + QUANTIZED_ADVICE
            )
    if _is_tensor_dict(obj):
        if weights != "model" and not weights.endswith("."):
            raise CheckpointError(f"{path} is a plain state_dict: it has no {weights!r} weights to choose")
        state_dict, notes, fused = network_weights(path, obj)
        return RawCheckpoint(form="state_dict", state_dict=state_dict, notes=notes, fused_batchnorms=fused)
    key, value = select_weights(
        obj, "model" if weights.endswith(".") else weights, lambda v: isinstance(v, nn.Module) or _is_tensor_dict(v)
    )
    if value is None:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(
            f"{path} is a dict without model weights (keys: {keys}); expected a state_dict or one of "
            + ", ".join(MODEL_KEYS + EMA_KEYS)
        )
    hints, tool = read_hints(obj), written_by(obj)
    chosen = "ema" if key in EMA_KEYS else weights if weights not in ("model", "ema") else "model"
    if isinstance(value, nn.Module):
        _refuse_quantized_module(path, value)
        _refuse_meta_module(path, value)
        return RawCheckpoint(
            form=f"training-dict[{key}] with pickled module", module=value, hints=hints, weights=chosen, written_by=tool
        )
    notes = []
    if key in EMA_KEYS:
        value, dropped = clean_ema(value)
        notes += dropped
    state_dict, found, fused = network_weights(path, value)
    notes += found
    others = sorted(str(k) for k in obj if k != key)
    if others:
        notes.append("also holds: " + ", ".join(others[:8]) + (" …" if len(others) > 8 else ""))
    unused_ema = [k for k in EMA_KEYS if k in obj and k != key]
    if unused_ema and chosen == "model":
        notes.append(f"EMA weights under {unused_ema[0]!r} not used (pass --weights ema for them)")
    return RawCheckpoint(
        form=f"training-dict[{key}]",
        state_dict=state_dict,
        notes=notes + hints.notes,
        hints=hints,
        weights=chosen,
        written_by=tool,
        fused_batchnorms=fused,
    )


def network_weights(path: Path, state_dict: dict) -> tuple[dict, list[str], dict]:
    """(the network's float weights, notes, fused BatchNorms) of a state_dict, refusing what holds none.

    Observer/fake-quantize buffers of a torch.ao prepared model are left out before the
    DataParallel/compile prefixes are stripped (QuantWrapper keeps the network under ``module.``
    beside its ``quant.`` observers), and BatchNorms fused into convs for QAT are moved back.
    """
    _refuse_meta(path, state_dict)
    kept, dropped = drop_observers(state_dict)
    state_dict, stripped = strip_prefixes(kept)
    notes = [f"stripped prefix {p!r}" for p in stripped]
    fused: dict = {}
    if dropped:
        unfused, fused = unfuse_batchnorms(state_dict)
        state_dict = OrderedDict(unfused)
        notes.append(prepared_note(dropped, fused))
    return state_dict, notes, fused


_META_ADVICE = (
    "it was saved from a model on the meta device (built under torch.device('meta') or with empty weights); "
    "save the state_dict after the real weights are loaded (model.to_empty(device='cpu') + load_state_dict)"
)


def _refuse_meta(path: Path, state_dict: dict) -> None:
    import torch

    if any(isinstance(v, torch.Tensor) and v.is_meta for v in state_dict.values()):
        raise CheckpointError(f"{path} holds no weight values: {_META_ADVICE}")


def _refuse_meta_module(path: Path, module) -> None:
    import itertools

    try:
        tensors = list(itertools.chain(module.parameters(), module.buffers()))
    except Exception:  # noqa: BLE001 - a TorchScript or broken module: nothing to judge here
        return
    if any(t.is_meta for t in tensors):
        raise CheckpointError(f"{path} holds no weight values: {_META_ADVICE}")


def _refuse_quantized_module(path: Path, module) -> None:
    found = quantized_module_names(module)
    if found:
        raise CheckpointError(
            f"{path} holds a whole quantized model (torch.ao converted: {', '.join(found[:4])}); " + QUANTIZED_ADVICE
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
