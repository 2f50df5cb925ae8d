"""Plain state_dicts and training dicts: what the PyTorch tutorials save, and the source asked last.

- ``torch.save(model.state_dict())``: a dict of tensors, perhaps under DataParallel's
  ``module.`` or torch.compile's ``_orig_mod.``.
- A training dict: the weights under ``model_state_dict`` / ``state_dict`` / ``model`` / ``net`` /
  ``network`` (or EMA weights under ``model_ema`` …), beside the optimizer, the epoch and whatever
  the script records; an ``arch`` string and spec fields (``num_classes``, ``input_shape``,
  ``mean``, ``std``, ``labels``) at the top level are read as hints.

``read_training_dict`` is the reader the training tools' own sources (timm, Lightning,
torchvision's references) share: they differ only in the hints they read beside the weights.
"""

from __future__ import annotations

from exporter.errors import CheckpointError
from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import EMA_KEYS, MODEL_KEYS, Hints, clean_ema, select_weights, spec_from_metadata
from exporter.loading.weights import is_tensor_dict, network_weights, refuse_meta_module, refuse_quantized_module
from exporter.sources import Source


def metadata_hints(obj: dict, hints: Hints | None = None) -> Hints:
    """What a dict says about itself at its top level (``arch``, spec fields), over what its tool wrote."""
    hints = hints or Hints()
    hints.spec = {**hints.spec, **spec_from_metadata(obj)}
    if isinstance(obj.get("arch"), str):
        hints.names.insert(0, (obj["arch"], "checkpoint metadata"))
    return hints


def recognises(found: CheckpointFile) -> bool:
    return isinstance(found.obj, dict)


def read(found: CheckpointFile) -> RawCheckpoint:
    path, obj, weights = found.path, found.obj, found.weights
    if not is_tensor_dict(obj):
        return read_training_dict(found, metadata_hints(obj), None)
    if weights != "model" and not weights.endswith("."):
        raise CheckpointError(f"{path} is a plain state_dict: it has no {weights!r} weights to choose")
    state_dict, notes, fused = network_weights(path, obj)
    return RawCheckpoint(form="state_dict", state_dict=state_dict, notes=notes, fused_batchnorms=fused)


def read_training_dict(found: CheckpointFile, hints: Hints, tool: str | None) -> RawCheckpoint:
    """The weights asked for (``--weights``) out of a training dict, with the hints its tool wrote."""
    from torch import nn

    path, obj, weights = found.path, found.obj, found.weights
    key, value = select_weights(
        obj, "model" if weights.endswith(".") else weights, lambda v: isinstance(v, nn.Module) or is_tensor_dict(v)
    )
    if value is None:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(
            f"{path} is a dict without model weights (keys: {keys}); expected a state_dict or one of "
            + ", ".join(MODEL_KEYS + EMA_KEYS)
        )
    chosen = "ema" if key in EMA_KEYS else weights if weights not in ("model", "ema") else "model"
    if isinstance(value, nn.Module):
        refuse_quantized_module(path, value)
        refuse_meta_module(path, value)
        return RawCheckpoint(
            form=f"training-dict[{key}] with pickled module", module=value, hints=hints, weights=chosen, written_by=tool
        )
    notes = []
    if key in EMA_KEYS:
        value, dropped = clean_ema(value)
        notes += dropped
    state_dict, found_notes, fused = network_weights(path, value)
    notes += found_notes
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


OBJECT = Source(
    name="state-dict",
    stage="object",
    recognises=recognises,
    read=read,
    reads="a plain state_dict, or a training dict holding one (model_state_dict, state_dict, model, net, network, EMA keys)",
)
