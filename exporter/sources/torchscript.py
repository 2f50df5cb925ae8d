"""TorchScript archives (``torch.jit.save``): a module with its own code, read without unpickling Python objects.

Recognised by the archive's own layout (``constants.pkl`` beside ``code/`` under the top-level
folder; see exporter.loading.probe.zip_layout), never by the suffix or the user's module paths.
"""

from __future__ import annotations

from exporter.errors import CheckpointError, first_line
from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.weights import refuse_quantized_module
from exporter.sources import Source


def recognises(found: CheckpointFile) -> bool:
    return found.layout == "torchscript"


def read(found: CheckpointFile) -> RawCheckpoint:
    import torch

    try:
        module = torch.jit.load(str(found.path), map_location="cpu")
    except Exception as exc:  # torch raises many types here
        raise CheckpointError(f"{found.path} looks like a TorchScript archive but cannot be loaded ({first_line(exc)})") from exc
    refuse_quantized_module(found.path, module)
    return RawCheckpoint(form="torchscript", module=module)


FILE = Source(name="torchscript", stage="file", recognises=recognises, read=read, reads="torch.jit.save archives")
