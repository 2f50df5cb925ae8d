"""TorchScript archives, loaded with torch.jit.load and run in process."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import BadInputError
from exporter.runners.torch import TorchRunner
from exporter.spec import METADATA_KEY, stored_spec


class TorchScriptRunner(TorchRunner):
    name = "torchscript"

    def __init__(self, path: Path, device: str = "cpu"):
        import torch

        extra = {METADATA_KEY: ""}
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"{path} is not a loadable TorchScript archive ({str(exc).splitlines()[0][:200]})") from None
        metadata = stored_spec(extra[METADATA_KEY], path)
        names = [o["name"] for o in metadata.get("outputs") or () if isinstance(o, dict) and "name" in o]
        super().__init__(module, output_names=names or None, device=device)  # traced tuples carry no names
        self.metadata = metadata


def open_artifact(path: Path, threads: int | None = None, device: str = "cpu") -> TorchScriptRunner:
    """The TorchScript format's runner (threads: torch's own, pinned by the caller)."""
    return TorchScriptRunner(path, device=device)


def is_torchscript(path: Path) -> bool:
    """A zip whose own records say torch.jit.save wrote it (exporter.loading.checkpoint_read.zip_layout)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    from exporter.loading.checkpoint_read import zip_layout

    with zipfile.ZipFile(path) as zf:
        return zip_layout(zf.namelist()) == "torchscript"
