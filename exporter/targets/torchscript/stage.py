"""TorchScript: torch.jit.trace (default) or torch.jit.script.

TorchScript is deprecated in recent torch, but the field still ships it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from exporter.errors import ExportError, root_cause
from exporter.spec import METADATA_KEY
from exporter.stages import StageOutput, example_batch


def make_reproducible(path: Path) -> None:
    """Rewrite the archive so the same model always gives the same bytes.

    torch.jit.save writes a random ``serialization_id`` and ``*.debug_pkl`` source-range
    tables that depend on what was traced before in the process. The id becomes a hash of the
    content and the optional debug tables are dropped (tracebacks inside TorchScript then show
    no Python source lines); scripted class constants are put in sorted order (see
    _sorted_constants). Entries keep their order, are stored uncompressed, and data
    records stay 64-byte aligned as torch's reader expects for mmap.
    """
    import hashlib
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = [(info.filename, src.read(info)) for info in src.infolist() if not info.filename.endswith(".debug_pkl")]
    entries = [(name, _sorted_constants(data) if "/code/" in name and name.endswith(".py") else data) for name, data in entries]
    digest = hashlib.sha256()
    for name, data in entries:
        if not name.endswith("/serialization_id"):
            digest.update(name.encode() + b"\0" + data)
    stable_id = str(int(digest.hexdigest(), 16))[:40].encode()
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as dst:
        assert dst.fp is not None  # open for writing
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            header = 30 + len(name.encode())
            padding = (-(dst.fp.tell() + header + 4)) % 64
            info.extra = b"\xff\xff" + padding.to_bytes(2, "little") + b"\0" * padding  # private extra field pads to 64
            dst.writestr(info, stable_id if name.endswith("/serialization_id") else data)
    tmp.replace(path)


_CONSTANT = re.compile(rb"^  \w+ : Final\[.*\] = .*$")


def _sorted_constants(code: bytes) -> bytes:
    """Sort each run of ``name : Final[...] = value`` class constants in a serialized TorchScript source.

    torch.jit.script emits a module's ``__constants__`` in set order, which follows the
    process's string-hash seed (PYTHONHASHSEED): two processes scripting the same model wrote
    the same constants in different orders. Their order has no meaning to the TorchScript loader.
    """
    lines, out, run = code.split(b"\n"), [], []
    for line in lines + [b""]:
        if _CONSTANT.match(line):
            run.append(line)
            continue
        out.extend(sorted(run))
        run = []
        out.append(line)
    return b"\n".join(out[:-1])


def export(loaded, staging_dir: Path, name: str, script: bool = False) -> StageOutput:
    import torch

    from exporter.outputs import unwrap

    module = loaded.module
    if script and unwrap(module) is not module:
        # a multi-output model: script the user's own module (a dict/tuple return is TorchScript too);
        # the wrapper that picks outputs (exporter/flat_model.py) is Python that the script compiler rejects
        if getattr(loaded, "dropped_outputs", None):
            raise ExportError("--script exports every output the model returns; drop --outputs, or trace (no --script)")
        module = unwrap(module)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if script:
                compiled = torch.jit.script(module)
            else:
                compiled = torch.jit.trace(module, example_batch(loaded.spec), check_trace=False)
    except Exception as exc:  # the jit raises many error types
        mode = "script" if script else "trace"
        hint = "; try --script" if not script else "; try tracing (drop --script)"
        raise ExportError(f"torch.jit.{mode} failed: {root_cause(exc)}{hint}") from exc
    target = Path(staging_dir) / name
    torch.jit.save(compiled, str(target), _extra_files={METADATA_KEY: loaded.spec.to_json()})
    make_reproducible(target)
    return StageOutput(files=[name], details={"mode": "script" if script else "trace", "torch": torch.__version__})


def make(req) -> StageOutput:
    """The torchscript row's stage (exporter.stages.StageRequest)."""
    return export(req.loaded, req.staging, req.name, **req.options.model_dump())
