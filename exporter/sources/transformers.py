"""Hugging Face transformers model folders (``save_pretrained``): image classifiers and semantic segmenters.

``config.json`` names the model class in ``architectures`` and the labels in ``id2label``; the
weights sit in ``model.safetensors``; an image processor's ``preprocessor_config.json`` may sit
beside them with the size, mean and std. The class decides the task: ``*ForSemanticSegmentation``
(SegFormer, DPT, BEiT, UperNet, MobileViT …) is loaded as a segmenter whose logits are class maps
(at the model's own output resolution: a quarter of the input for SegFormer), every other as an
image classifier. The model returns an output object; the artifact's output is its ``logits``.
Remote code (``auto_map``) is never run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.errors import BackendUnavailable, CheckpointError, first_line
from exporter.loading.probe import CheckpointFile, read_json
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints, spec_from_metadata
from exporter.sources import Source, hub_folder

INSTALL = "pip install 'cnnexport[transformers]'"
SEGMENTER_SUFFIX = "ForSemanticSegmentation"


def transformers_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def recognises(found: CheckpointFile) -> bool:
    architectures = found.config.get("architectures")
    return isinstance(architectures, list) and bool(architectures)


def read(found: CheckpointFile) -> RawCheckpoint:
    folder, config = found.path, found.config
    hub_folder.refuse_weights_choice(found)
    if config.get("auto_map"):
        raise CheckpointError(f"{folder} needs remote code (config.json auto_map); cnnexport never runs code from a model folder")
    if not transformers_available():
        raise BackendUnavailable(f"{folder} is a transformers model folder and transformers is not installed: {INSTALL}")
    weights_file = hub_folder.weights_file(folder)
    architecture = str(config["architectures"][0])
    segmenter = architecture.endswith(SEGMENTER_SUFFIX)
    model = _from_pretrained(folder, architecture, segmenter)
    spec = _spec(folder, config)
    # class maps need a class axis to argmax over; one channel (a sigmoid mask) is judged by its values (dense)
    tasks = {"*": "segment"} if segmenter and spec.get("num_classes", 0) > 1 else {}
    hints = Hints(names=[(architecture, "config.json architectures")], spec=spec, tasks=tasks)
    return RawCheckpoint(
        form=f"transformers folder ({weights_file.name})",
        module=LogitsOnly(model),
        hints=hints,
        written_by=f"transformers save_pretrained ({config.get('model_type', '?')})",
    )


def _from_pretrained(folder: Path, architecture: str, segmenter: bool):
    """The model through the Auto class of its task, from local files only, checking every weight fits."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    auto = transformers.AutoModelForSemanticSegmentation if segmenter else transformers.AutoModelForImageClassification
    try:
        model, info = auto.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False, output_loading_info=True)
    except Exception as exc:  # transformers raises many types
        what = "a semantic segmenter" if segmenter else "an image classifier"
        raise CheckpointError(f"transformers cannot load {folder} as {what} ({first_line(exc)})") from exc
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if problems:
        shown = "; ".join(f"{len(v)} {k.replace('_', ' ')} ({', '.join(map(str, list(v)[:3]))})" for k, v in problems.items())
        raise CheckpointError(f"the weights in {folder} do not fit {architecture}: {shown}")
    return model


def _spec(folder: Path, config: dict) -> dict:
    """Input spec: preprocessor_config.json where saved, else what the model config says."""
    pre = read_json(folder / "preprocessor_config.json") if (folder / "preprocessor_config.json").is_file() else {}
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
        """A transformers model that returns its logits tensor (what every artifact outputs)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values, return_dict=True).logits

    return LogitsOnly


def LogitsOnly(model):  # noqa: N802 - behaves like a class for callers
    return _logits_module_class()(model)


FOLDER = Source(
    name="transformers",
    stage="folder",
    recognises=recognises,
    read=read,
    reads="transformers save_pretrained folders: image classifiers and *ForSemanticSegmentation segmenters",
)
