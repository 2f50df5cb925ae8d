"""Read a checkpoint file or model folder into a RawCheckpoint: the one loader that asks the sources.

The sources (exporter/sources/, one module per ecosystem) are asked stage by stage, in the order
exporter/sources/__init__.py states: a folder's by its config.json; then a file's by its bytes
(safetensors, TorchScript, .pt2); then by the globals its pickle names (Ultralytics); last, by
the object the restricted unpickler returns (a whole pickled model only with ``trust_pickle``).
The first that recognises the path reads it. What no source takes is refused, saying why.
exporter.loading.checkpoint turns the result into a LoadedModel.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import CheckpointError
from exporter.loading.probe import CheckpointFile, zip_layout
from exporter.loading.raw import RawCheckpoint
from exporter.loading.weights import refuse_quantized_weights

__all__ = ["read_checkpoint", "zip_layout"]  # zip_layout: exporter/runners/torchscript.py recognises archives by it


def read_checkpoint(path: Path, trust_pickle: bool = False, weights: str = "model") -> RawCheckpoint:
    """Read the file or folder with the first source that recognises it, saying clearly why one is refused."""
    from exporter import sources

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    found = CheckpointFile(path, trust_pickle=trust_pickle, weights=weights, read_file=read_checkpoint)
    if path.is_dir():
        return _first(sources.at("folder"), found) or _unknown_folder(found)
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the save was probably interrupted")
    raw = _first(sources.at("file"), found) or _first(sources.at("pickle"), found)
    if raw is not None:
        return raw
    refuse_quantized_weights(path, found.obj)  # found.obj unpickles, refusing what it must
    raw = _first(sources.at("object"), found)
    if raw is None:
        raise CheckpointError(
            f"{path} holds a {type(found.obj).__name__}, not a model: expected a state_dict, a training dict or a module"
        )
    return raw


def _first(candidates, found: CheckpointFile) -> RawCheckpoint | None:
    """What the first source that recognises the path reads from it; None when none does."""
    source = next((s for s in candidates if s.recognises(found)), None)
    return source.read(found) if source is not None else None


def _unknown_folder(found: CheckpointFile) -> RawCheckpoint:
    folder = found.path
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"checkpoint {folder} is a directory without config.json; pass the checkpoint file, "
            "or a Hugging Face model folder (timm or transformers)"
        )
    raise CheckpointError(
        f"{folder / 'config.json'} names no model: expected timm's 'architecture', transformers' 'architectures' "
        "or segmentation_models_pytorch's '_model_class'"
    )
