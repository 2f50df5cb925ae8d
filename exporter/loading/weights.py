"""What every source does to the weights it found: keep the network's own, refuse what holds none.

Shared by the checkpoint sources (exporter/sources/), whatever tool wrote the file: the
DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes go, torch.ao observers are
left out and fused BatchNorms moved back, and weights that cannot be exported (a meta-device
save, a converted int8 model) are refused with a sentence that says what to pass instead.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from exporter.errors import CheckpointError
from exporter.loading.quantized_forms import (
    QUANTIZED_ADVICE,
    drop_observers,
    is_quantized_state_dict,
    prepared_note,
    quantized_module_names,
    unfuse_batchnorms,
)
from exporter.loading.training_formats import EMA_KEYS, MODEL_KEYS

PREFIXES = ("module.", "_orig_mod.")

META_ADVICE = (
    "it was saved from a model on the meta device (built under torch.device('meta') or with empty weights); "
    "save the state_dict after the real weights are loaded (model.to_empty(device='cpu') + load_state_dict)"
)


def is_tensor_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_prefixes(state_dict: dict) -> tuple[dict, list[str]]:
    """Remove DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes (in any nesting).

    The per-module version numbers PyTorch keeps in ``state_dict._metadata`` travel along,
    re-keyed the same way: some modules (torchvision's MNASNet) refuse weights without them.
    """
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


def network_weights(path: Path, state_dict: dict) -> tuple[dict, list[str], dict]:
    """(the network's float weights, notes, fused BatchNorms) of a state_dict, refusing what holds none.

    Observer/fake-quantize buffers of a torch.ao prepared model are left out before the
    DataParallel/compile prefixes are stripped (QuantWrapper keeps the network under ``module.``
    beside its ``quant.`` observers), and BatchNorms fused into convs for QAT are moved back.
    """
    refuse_meta(path, state_dict)
    kept, dropped = drop_observers(state_dict)
    state_dict, stripped = strip_prefixes(kept)
    notes = [f"stripped prefix {p!r}" for p in stripped]
    fused: dict = {}
    if dropped:
        unfused, fused = unfuse_batchnorms(state_dict)
        state_dict = OrderedDict(unfused)
        notes.append(prepared_note(dropped, fused))
    return state_dict, notes, fused


def refuse_meta(path: Path, state_dict: dict) -> None:
    import torch

    if any(isinstance(v, torch.Tensor) and v.is_meta for v in state_dict.values()):
        raise CheckpointError(f"{path} holds no weight values: {META_ADVICE}")


def refuse_meta_module(path: Path, module) -> None:
    import itertools

    try:
        tensors = list(itertools.chain(module.parameters(), module.buffers()))
    except Exception:  # noqa: BLE001 - a TorchScript or broken module: nothing to judge here
        return
    if any(t.is_meta for t in tensors):
        raise CheckpointError(f"{path} holds no weight values: {META_ADVICE}")


def refuse_quantized_module(path: Path, module) -> None:
    found = quantized_module_names(module)
    if found:
        raise CheckpointError(
            f"{path} holds a whole quantized model (torch.ao converted: {', '.join(found[:4])}); " + QUANTIZED_ADVICE
        )


def refuse_quantized_weights(path: Path, obj) -> None:
    """A converted model's int8 weights, whether the dict is them or holds them under a training key."""
    if not isinstance(obj, dict):
        return
    for value in [obj, *(obj.get(k) for k in MODEL_KEYS + EMA_KEYS)]:
        if is_quantized_state_dict(value):
            raise CheckpointError(
                f"{path} holds a quantized (torch.ao converted) model's weights (int8 tensors with scale/zero_point); "
                + QUANTIZED_ADVICE
            )
