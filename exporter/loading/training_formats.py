"""What training dicts share, whichever tool wrote them: where the weights sit and what the spec fields are.

A training dict holds the network's weights under one of a few keys (``model``,
``state_dict``, …), EMA weights under another, beside the optimizer and whatever the tool
records about the model. The tools themselves (torchvision's and timm's train.py, Lightning) are
checkpoint sources (exporter/sources/); this is the part they all read the same way. Only plain
values are read; nothing is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.errors import CheckpointError

MODEL_KEYS = ("model_state_dict", "state_dict", "model", "net", "network")
EMA_KEYS = ("model_ema", "state_dict_ema", "model_ema_state_dict", "ema_state_dict", "ema")


@dataclass
class Hints:
    """What the file says about its architecture and input, each with where it was read."""

    names: list[tuple[str, str]] = field(default_factory=list)  # (architecture name, where it was read)
    spec: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    arch_kwargs: dict = field(default_factory=dict)  # builder arguments the file records (timm's model_args)
    tasks: dict = field(default_factory=dict)  # the task of each output (or '*'), where the file's source knows it


def as_plain_dict(value: Any) -> dict | None:
    """A Namespace or a dict (Lightning's AttributeDict is one) as a dict; anything else None."""
    import argparse

    if isinstance(value, argparse.Namespace):
        return vars(value)
    if isinstance(value, dict):
        return dict(value)
    return None


def select_weights(obj: dict, weights: str, is_weights) -> tuple[str, Any]:
    """(key, value) of the weights asked for: the model's by default, EMA only when asked."""
    if weights == "model":
        key = next((k for k in MODEL_KEYS if is_weights(obj.get(k))), None)
        if key is None:
            ema = next((k for k in EMA_KEYS if is_weights(obj.get(k))), None)
            if ema is not None:
                raise CheckpointError(f"the checkpoint holds only EMA weights (under {ema!r}); pass --weights ema to use them")
            return "", None
        return key, obj[key]
    if weights == "ema":
        key = next((k for k in EMA_KEYS if is_weights(obj.get(k))), None)
        if key is None:
            raise CheckpointError("the checkpoint has no EMA weights (none of " + ", ".join(EMA_KEYS) + "); keys: " + _keys(obj))
        return key, obj[key]
    if not is_weights(obj.get(weights)):
        raise CheckpointError(f"the checkpoint has no weights under {weights!r}; keys: {_keys(obj)}")
    return weights, obj[weights]


def _keys(obj: dict) -> str:
    return ", ".join(map(str, list(obj)[:12]))


def clean_ema(state_dict: dict) -> tuple[dict, list[str]]:
    """torch.optim.swa_utils.AveragedModel (torchvision's EMA) adds its step counter beside the weights."""
    if "n_averaged" in state_dict:
        state_dict = {k: v for k, v in state_dict.items() if k != "n_averaged"}
        return state_dict, ["left out the EMA step counter 'n_averaged'"]
    return state_dict, []


def spec_from_train_args(args: dict) -> dict:
    """torchvision's and timm's train.py options that describe the evaluation input (each reads its own names)."""
    out = spec_from_metadata({k: v for k, v in args.items() if k in ("num_classes", "mean", "std")})
    size = args.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3:
        out["input_shape"] = tuple(int(v) for v in size)
    elif isinstance(args.get("img_size"), int):
        out["input_shape"] = (int(args.get("in_chans") or 3), args["img_size"], args["img_size"])
    elif isinstance(args.get("val_crop_size"), int):
        out["input_shape"] = (3, args["val_crop_size"], args["val_crop_size"])
        if isinstance(args.get("val_resize_size"), int) and args["val_resize_size"] > 0:
            out["crop_pct"] = round(args["val_crop_size"] / args["val_resize_size"], 4)
    if isinstance(args.get("crop_pct"), float):
        out["crop_pct"] = args["crop_pct"]
    if isinstance(args.get("interpolation"), str) and args["interpolation"]:
        out["interpolation"] = args["interpolation"]
    return out


def spec_from_metadata(metadata: dict) -> dict:
    """Spec fields a dict may carry (num_classes, input_shape, mean, std, labels)."""
    out: dict = {}
    if isinstance(metadata.get("num_classes"), int) and not isinstance(metadata.get("num_classes"), bool):
        out["num_classes"] = metadata["num_classes"]
    shape = metadata.get("input_shape") or metadata.get("input_size")
    if isinstance(shape, (list, tuple)) and len(shape) in (3, 4) and all(isinstance(v, int) for v in shape):
        out["input_shape"] = tuple(int(v) for v in shape[-3:])
    for key in ("mean", "std"):
        if isinstance(metadata.get(key), (list, tuple)) and metadata[key]:
            out[key] = tuple(float(v) for v in metadata[key])
    for key in ("labels", "classes", "class_names", "label_names"):
        if isinstance(metadata.get(key), (list, tuple)) and metadata[key]:
            out["labels"] = tuple(str(v) for v in metadata[key])
    return out


def prefix_views(state_dict: dict, max_depth: int = 2) -> list[tuple[str, dict]]:
    """Sub-dictionaries under a common key prefix ('model.', 'net.backbone.'), largest first.

    A LightningModule's state_dict holds the network under the attribute it was assigned to,
    beside loss weights and metrics; one of these views is the network's own state_dict.
    """
    counts: dict[str, int] = {}
    for key in state_dict:
        parts = key.split(".")
        for depth in range(1, min(max_depth, len(parts) - 1) + 1):
            prefix = ".".join(parts[:depth]) + "."
            counts[prefix] = counts.get(prefix, 0) + 1
    prefixes = sorted((p for p, n in counts.items() if n >= 2), key=lambda p: (-counts[p], p))
    return [(p, {k[len(p) :]: v for k, v in state_dict.items() if k.startswith(p)}) for p in prefixes]
