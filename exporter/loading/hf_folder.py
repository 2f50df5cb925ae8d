"""Hugging Face model folders: a timm Hub folder, a transformers image classifier, or a
segmentation_models_pytorch model.

- timm (``save_for_hf`` / ``push_to_hf_hub``): ``config.json`` with ``architecture``,
  ``num_classes``, ``model_args``, ``label_names`` and ``pretrained_cfg`` (input_size, mean, std,
  interpolation, crop_pct), beside ``model.safetensors`` or ``pytorch_model.bin``.
- transformers (``save_pretrained``): ``config.json`` with ``architectures`` and ``id2label``,
  weights in ``model.safetensors``; an image processor's ``preprocessor_config.json`` may sit
  beside it with the size, mean and std. The model returns an output object; the artifact's
  output is its ``logits``.

- segmentation_models_pytorch (``save_pretrained``, the Hub mixin): ``config.json`` with
  ``_model_class`` (Unet, FPN, DeepLabV3Plus, …) and the constructor's arguments, beside
  ``model.safetensors``. The model returns its class map.

Weights are read as safetensors or with the same restricted unpickler as any checkpoint;
remote code (``auto_map``) is never run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.errors import BackendUnavailable, CheckpointError, first_line
from exporter.loading.training_formats import Hints, spec_from_metadata

# create_model arguments that make timm read or fetch files itself (checkpoint_path runs its own
# torch.load): never taken from a folder's config.json.
UNSAFE_MODEL_ARGS = ("checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "weights_only")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")
TRANSFORMERS_INSTALL = "pip install 'cnnexport[transformers]'"
SMP_INSTALL = "pip install segmentation-models-pytorch"


def transformers_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return value


def read_folder(folder: Path, weights: str = "model"):
    """A model folder -> RawCheckpoint (timm: a state_dict and its hints; transformers: a module)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"checkpoint {folder} is a directory without config.json; pass the checkpoint file, "
            "or a Hugging Face model folder (timm or transformers)"
        )
    if weights != "model":
        raise CheckpointError(f"{folder} is a Hugging Face model folder: it has no {weights!r} weights to choose")
    config = _read_json(config_path)
    if isinstance(config.get("architecture"), str):
        return _timm_folder(folder, config)
    if isinstance(config.get("architectures"), list) and config["architectures"]:
        return _transformers_folder(folder, config)
    if isinstance(config.get("_model_class"), str):
        return _smp_folder(folder, config)
    raise CheckpointError(
        f"{config_path} names no model: expected timm's 'architecture', transformers' 'architectures' "
        "or segmentation_models_pytorch's '_model_class'"
    )


def _weights_file(folder: Path) -> Path:
    found = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if found is None:
        sharded = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if sharded:
            raise CheckpointError(f"{folder} holds sharded weights ({sharded[0].name}, …); cnnexport reads one weights file")
        raise CheckpointError(f"{folder} has a config.json but no weights ({' or '.join(WEIGHT_FILES[:2])})")
    return found


def _timm_folder(folder: Path, config: dict):
    from exporter.loading.checkpoint_read import RawCheckpoint, read_checkpoint

    weights = read_checkpoint(_weights_file(folder))
    if weights.state_dict is None:
        raise CheckpointError(f"{folder}'s weights file holds no state_dict")
    cfg = config["pretrained_cfg"] if isinstance(config.get("pretrained_cfg"), dict) else {}
    spec = spec_from_metadata(
        {
            "input_size": cfg.get("input_size"),
            "mean": cfg.get("mean"),
            "std": cfg.get("std"),
            "num_classes": config.get("num_classes"),
            "label_names": config.get("label_names"),
        }
    )
    if isinstance(cfg.get("interpolation"), str) and cfg["interpolation"]:
        spec["interpolation"] = cfg["interpolation"]
    if isinstance(cfg.get("crop_pct"), (int, float)):
        spec["crop_pct"] = float(cfg["crop_pct"])
    model_args = config["model_args"] if isinstance(config.get("model_args"), dict) else {}
    unsafe = [k for k in model_args if k in UNSAFE_MODEL_ARGS]
    if unsafe:
        raise CheckpointError(
            f"{folder}/config.json model_args sets {', '.join(unsafe)}, which would make timm load files itself; refused"
        )
    hints = Hints(names=[("timm:" + config["architecture"], "config.json architecture")], spec=spec, arch_kwargs=dict(model_args))
    return RawCheckpoint(
        form=f"timm hub folder ({_weights_file(folder).name})",
        state_dict=weights.state_dict,
        hints=hints,
        notes=weights.notes,
        written_by="timm save_for_hf",
    )


def _transformers_folder(folder: Path, config: dict):
    from exporter.loading.checkpoint_read import RawCheckpoint

    if config.get("auto_map"):
        raise CheckpointError(f"{folder} needs remote code (config.json auto_map); cnnexport never runs code from a model folder")
    if not transformers_available():
        raise BackendUnavailable(
            f"{folder} is a transformers model folder and transformers is not installed: {TRANSFORMERS_INSTALL}"
        )
    weights_file = _weights_file(folder)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False, output_loading_info=True
        )
    except Exception as exc:  # transformers raises many types
        raise CheckpointError(f"transformers cannot load {folder} as an image classifier ({first_line(exc)})") from exc
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if problems:
        shown = "; ".join(f"{len(v)} {k.replace('_', ' ')} ({', '.join(map(str, list(v)[:3]))})" for k, v in problems.items())
        raise CheckpointError(f"the weights in {folder} do not fit {config['architectures'][0]}: {shown}")
    hints = Hints(names=[(config["architectures"][0], "config.json architectures")], spec=_transformers_spec(folder, config))
    return RawCheckpoint(
        form=f"transformers folder ({weights_file.name})",
        module=LogitsOnly(model),
        hints=hints,
        written_by=f"transformers save_pretrained ({config.get('model_type', '?')})",
    )


def _smp_folder(folder: Path, config: dict):
    """segmentation_models_pytorch: the class named by ``_model_class``, built without downloading encoder weights."""
    import importlib.util

    from exporter.loading.checkpoint_read import RawCheckpoint, read_checkpoint

    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        raise BackendUnavailable(f"{folder} is a segmentation_models_pytorch folder and it is not installed: {SMP_INSTALL}")
    import segmentation_models_pytorch as smp

    name = config["_model_class"]
    cls = getattr(smp, name, None)
    if not isinstance(cls, type):
        raise CheckpointError(
            f"{folder}/config.json names model class {name!r}, which segmentation_models_pytorch {smp.__version__} does not have"
        )
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    kwargs["encoder_weights"] = None  # the folder's own weights follow; never download
    try:
        model = cls(**kwargs)
    except Exception as exc:  # user config
        raise CheckpointError(
            f"segmentation_models_pytorch cannot build {name} from {folder}/config.json ({first_line(exc)})"
        ) from exc
    weights = read_checkpoint(_weights_file(folder))
    if weights.state_dict is None:
        raise CheckpointError(f"{folder}'s weights file holds no state_dict")
    from exporter.loading.modules import load_state_dict_strict

    load_state_dict_strict(model, weights.state_dict, f"smp.{name}")
    spec = {"input_shape": (int(kwargs.get("in_channels") or 3), 256, 256)}  # any multiple of 32; --input-shape to change
    hints = Hints(names=[(f"smp.{name}({kwargs.get('encoder_name', '?')})", "config.json _model_class")], spec=spec)
    return RawCheckpoint(
        form=f"segmentation_models_pytorch folder ({_weights_file(folder).name})",
        module=model,
        hints=hints,
        notes=weights.notes,
        written_by=f"segmentation_models_pytorch {smp.__version__} save_pretrained",
    )


def _transformers_spec(folder: Path, config: dict) -> dict:
    """Input spec: preprocessor_config.json where saved, else what the model config says."""
    pre = _read_json(folder / "preprocessor_config.json") if (folder / "preprocessor_config.json").is_file() else {}
    channels = int(config.get("num_channels") or 3)
    size: Any = pre.get("crop_size") or pre.get("size") or config.get("image_size") or 224  # JSON: an int, a dict or a list
    if isinstance(size, dict):
        size = (size.get("height"), size.get("width")) if "height" in size else (size.get("shortest_edge"),) * 2
    elif isinstance(size, int):
        size = (size, size)
    spec: dict = {}
    if all(isinstance(v, int) and v > 0 for v in size):
        spec["input_shape"] = (channels, int(size[0]), int(size[1]))
    spec.update(spec_from_metadata({"mean": pre.get("image_mean"), "std": pre.get("image_std")}))
    if isinstance(pre.get("crop_pct"), (int, float)):
        spec["crop_pct"] = float(pre["crop_pct"])
    labels = config.get("id2label") or {}
    try:
        ordered = [labels[str(i)] if str(i) in labels else labels[i] for i in range(len(labels))]
    except KeyError:
        ordered = []
    # transformers fills in LABEL_0, LABEL_1 … when none were given: those are not labels
    if ordered and not all(str(v) == f"LABEL_{i}" for i, v in enumerate(ordered)):
        spec["labels"] = tuple(str(v) for v in ordered)
    spec["num_classes"] = len(ordered) or int(config.get("num_labels") or 0) or None
    if spec["num_classes"] is None:
        del spec["num_classes"]
    return spec


def _logits_module_class():
    from torch import nn

    class LogitsOnly(nn.Module):
        """A transformers classifier that returns its logits tensor (what every artifact outputs)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values, return_dict=True).logits

    return LogitsOnly


def LogitsOnly(model):  # noqa: N802 - behaves like a class for callers
    return _logits_module_class()(model)
