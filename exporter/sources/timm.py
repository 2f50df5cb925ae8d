"""timm: its Hub folders, its train.py checkpoints, and its feature extractors.

- A Hub folder (``save_for_hf`` / ``push_to_hf_hub``): ``config.json`` with ``architecture``,
  ``num_classes``, ``model_args``, ``label_names`` and ``pretrained_cfg`` (input_size, mean, std,
  interpolation, crop_pct), beside ``model.safetensors`` or ``pytorch_model.bin``.
- train.py (``CheckpointSaver``): ``{"epoch", "arch", "state_dict", "optimizer", "version",
  "args", "state_dict_ema", "metric"}``; ``arch`` is the model *class* name (``resnet``),
  ``args.model`` the timm name; ``args.input_size`` / ``img_size`` / ``mean`` / ``std``.
- ``timm.create_model(..., features_only=True)`` (FeatureListNet, EfficientNetFeatures, …): a
  backbone whose outputs are feature maps at several strides, not class maps; they are judged
  by the features task (per-channel error and cosine, exporter/tasks/features.py), and the model
  has no classes.
"""

from __future__ import annotations

import sys

from exporter.errors import CheckpointError
from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints, as_plain_dict, spec_from_metadata, spec_from_train_args
from exporter.sources import Source, hub_folder
from exporter.sources.state_dict import read_training_dict

# create_model arguments that make timm read or fetch files itself (checkpoint_path runs its own
# torch.load): never taken from a folder's config.json.
UNSAFE_MODEL_ARGS = ("checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "weights_only")


def recognises_folder(found: CheckpointFile) -> bool:
    return isinstance(found.config.get("architecture"), str)


def read_folder(found: CheckpointFile) -> RawCheckpoint:
    folder, config = found.path, found.config
    hub_folder.refuse_weights_choice(found)
    state_dict, notes = hub_folder.read_weights(found)
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
        form=f"timm hub folder ({hub_folder.weights_file(folder).name})",
        state_dict=state_dict,
        hints=hints,
        notes=notes,
        written_by="timm save_for_hf",
    )


def is_train_checkpoint(obj) -> bool:
    """timm's CheckpointSaver writes arch (a class name), version and args together."""
    return (
        isinstance(obj, dict) and isinstance(obj.get("arch"), str) and "version" in obj and "args" in obj and "state_dict" in obj
    )


def train_hints(obj: dict) -> Hints:
    """The timm name (args.model) and the evaluation input train.py was given."""
    args = as_plain_dict(obj.get("args")) or {}
    hints = Hints(spec={**spec_from_train_args(args), **spec_from_metadata(obj)})
    if isinstance(args.get("model"), str):
        hints.names.append(("timm:" + args["model"], "timm train.py args.model"))
        if obj["arch"] != args["model"]:  # timm before 1.0 saved the model class name here
            hints.notes.append(f"timm's 'arch' {obj['arch']!r} is the model class name; args.model names the architecture")
    return hints


def recognises_train(found: CheckpointFile) -> bool:
    return is_train_checkpoint(found.obj)


def read_train(found: CheckpointFile) -> RawCheckpoint:
    return read_training_dict(found, train_hints(found.obj), "timm train.py")


def feature_tasks(module) -> dict[str, str]:
    """Every output of a timm feature extractor is a feature map (the features task), whatever its channel count.

    timm marks its feature extractors by a ``FeatureInfo`` (a classifier's ``feature_info`` is a
    list): the generic wrappers (FeatureListNet …) and the families' own (EfficientNetFeatures,
    MobileNetV3Features …) alike.
    """
    models = sys.modules.get("timm.models")  # a timm module exists only where timm was imported to build or unpickle it
    info = getattr(models, "FeatureInfo", None)
    return {"*": "features"} if info is not None and isinstance(getattr(module, "feature_info", None), info) else {}


HUB_FOLDER = Source(
    name="timm-hub",
    stage="folder",
    recognises=recognises_folder,
    read=read_folder,
    reads="timm save_for_hf / push_to_hf_hub folders",
    tasks=feature_tasks,
)
TRAIN_DICT = Source(
    name="timm-train",
    stage="object",
    recognises=recognises_train,
    read=read_train,
    reads="timm train.py checkpoints (CheckpointSaver)",
)
