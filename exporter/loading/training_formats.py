"""What the training tools people use write beside the weights, and how to read it.

- torchvision's ``references/classification/train.py``: ``{"model", "optimizer", "lr_scheduler",
  "epoch", "args": Namespace}``, ``model_ema`` (an ``AveragedModel``: ``module.`` keys plus
  ``n_averaged``) with ``--model-ema``; ``args.model`` names the torchvision model,
  ``args.val_crop_size`` / ``val_resize_size`` / ``interpolation`` its evaluation transform.
- timm's ``train.py`` (``CheckpointSaver``): ``{"epoch", "arch", "state_dict", "optimizer",
  "version", "args", "state_dict_ema", "metric"}``; ``arch`` is the model *class* name
  (``resnet``), ``args.model`` the timm name; ``args.input_size``/``img_size``/``mean``/``std``.
- Lightning ``.ckpt``: ``state_dict`` keyed by the LightningModule's attributes (``model.``,
  ``net.`` … beside loss buffers), ``hyper_parameters`` from ``save_hyperparameters()``.

Only plain values are read from these; nothing is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.errors import CheckpointError

MODEL_KEYS = ("model_state_dict", "state_dict", "model", "net", "network")
EMA_KEYS = ("model_ema", "state_dict_ema", "model_ema_state_dict", "ema_state_dict", "ema")
# hyper_parameters keys that may name the architecture (Lightning users pick their own)
ARCH_HPARAMS = ("arch", "architecture", "model_name", "backbone", "arch_name", "model", "net", "network")


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


def is_timm_train_checkpoint(obj: dict) -> bool:
    """timm's CheckpointSaver writes arch (a class name), version and args together."""
    return isinstance(obj.get("arch"), str) and "version" in obj and "args" in obj and "state_dict" in obj


def read_hints(obj: dict) -> Hints:
    """Architecture names and input spec written by torchvision's train.py, timm's train.py or Lightning."""
    hints = Hints()
    args = as_plain_dict(obj.get("args")) or {}
    hparams = as_plain_dict(obj.get("hyper_parameters")) or {}
    if is_timm_train_checkpoint(obj):
        if isinstance(args.get("model"), str):
            hints.names.append(("timm:" + args["model"], "timm train.py args.model"))
            if obj["arch"] != args["model"]:  # timm before 1.0 saved the model class name here
                hints.notes.append(f"timm's 'arch' {obj['arch']!r} is the model class name; args.model names the architecture")
    elif isinstance(args.get("model"), str):
        hints.names.append((args["model"], "args.model"))
    for key in ARCH_HPARAMS:
        if isinstance(hparams.get(key), str):
            hints.names.append((hparams[key], f"hyper_parameters.{key}"))
    if isinstance(obj.get("arch"), str) and not is_timm_train_checkpoint(obj):
        hints.names.insert(0, (obj["arch"], "checkpoint metadata"))
    hints.spec = {**_spec_from_args(args), **spec_from_metadata(hparams), **spec_from_metadata(obj)}
    return hints


def _spec_from_args(args: dict) -> dict:
    """torchvision's and timm's train.py options that describe the evaluation input."""
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


def written_by(obj: dict) -> str | None:
    """The training tool whose checkpoint layout this is, when it is recognisable."""
    import argparse

    if "pytorch-lightning_version" in obj:
        return f"Lightning {obj['pytorch-lightning_version']}"
    if is_timm_train_checkpoint(obj):
        return "timm train.py"
    if isinstance(obj.get("args"), argparse.Namespace) and "model" in obj and "lr_scheduler" in obj:
        return "torchvision references train.py"
    return None
