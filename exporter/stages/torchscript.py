"""TorchScript: torch.jit.trace (default) or torch.jit.script.

TorchScript is deprecated in recent torch, but the field still ships it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from exporter.errors import ExportError, root_cause
from exporter.spec import METADATA_KEY
from exporter.stages import StageOutput, example_batch


def export(loaded, staging_dir: Path, name: str, script: bool = False) -> StageOutput:
    import torch

    module = loaded.module
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if script:
                compiled = torch.jit.script(module)
            else:
                compiled = torch.jit.trace(module, example_batch(loaded.spec), check_trace=False)
    except Exception as exc:  # noqa: BLE001 - the jit raises many error types
        mode = "script" if script else "trace"
        hint = "; try --script" if not script else "; try tracing (drop --script)"
        raise ExportError(f"torch.jit.{mode} failed: {root_cause(exc)}{hint}") from exc
    target = Path(staging_dir) / name
    torch.jit.save(compiled, str(target), _extra_files={METADATA_KEY: loaded.spec.to_json()})
    return StageOutput(files=[name], details={"mode": "script" if script else "trace", "torch": torch.__version__})
