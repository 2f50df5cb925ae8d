"""What the Hugging Face-style model folders share (timm, transformers, segmentation_models_pytorch).

``save_pretrained`` / ``save_for_hf`` write a ``config.json`` (which library, which model, its
arguments) beside one weights file. The weights file is read by the loader like any checkpoint:
safetensors, or a torch.save file through the restricted unpickler.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import CheckpointError
from exporter.loading.probe import CheckpointFile

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")


def refuse_weights_choice(found: CheckpointFile) -> None:
    if found.weights != "model":
        raise CheckpointError(f"{found.path} is a Hugging Face model folder: it has no {found.weights!r} weights to choose")


def weights_file(folder: Path) -> Path:
    found = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if found is None:
        sharded = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if sharded:
            raise CheckpointError(f"{folder} holds sharded weights ({sharded[0].name}, …); cnnexport reads one weights file")
        raise CheckpointError(f"{folder} has a config.json but no weights ({' or '.join(WEIGHT_FILES[:2])})")
    return found


def read_weights(found: CheckpointFile) -> tuple[dict, list[str]]:
    """(state_dict, notes) of the folder's weights file, read by the loader like any checkpoint file."""
    if found.read_file is None:
        raise TypeError("CheckpointFile.read_file is not set: the loader reads a folder's weights file")
    weights = found.read_file(weights_file(found.path))
    if weights.state_dict is None:
        raise CheckpointError(f"{found.path}'s weights file holds no state_dict")
    return weights.state_dict, weights.notes
