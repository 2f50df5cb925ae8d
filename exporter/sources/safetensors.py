"""safetensors files: a state_dict without pickle, and string metadata that may carry the spec.

Recognised by the ``.safetensors`` suffix or by the format's own header (an 8-byte length, then a
JSON object), whatever the file is called. Metadata values are strings; JSON ones are decoded,
and an ``arch`` names the architecture.
"""

from __future__ import annotations

import json

from exporter.errors import CheckpointError, first_line
from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints, spec_from_metadata
from exporter.loading.weights import network_weights
from exporter.sources import Source


def recognises(found: CheckpointFile) -> bool:
    head = found.head
    return found.path.suffix == ".safetensors" or (len(head) > 9 and head[8:9] == b"{" and not found.is_zip)


def read(found: CheckpointFile) -> RawCheckpoint:
    path = found.path
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        state_dict = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({first_line(exc)})") from exc
    meta = metadata_from_strings(metadata)
    state_dict, notes, fused = network_weights(path, dict(state_dict))
    hints = Hints(spec=spec_from_metadata(meta))
    if isinstance(meta.get("arch"), str):
        hints.names.append((meta["arch"], "checkpoint metadata"))
    return RawCheckpoint(
        form="safetensors", state_dict=state_dict, metadata=meta, notes=notes, hints=hints, fused_batchnorms=fused
    )


def metadata_from_strings(metadata: dict[str, str]) -> dict:
    """safetensors metadata is str->str; decode JSON values where they parse."""
    out: dict = {}
    for key, value in metadata.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


FILE = Source(name="safetensors", stage="file", recognises=recognises, read=read, reads="*.safetensors (by suffix or header)")
