"""A recipe run's state folder: each stage's key (what decides its output), the stamp that records it, the lock.

A stage is re-run only when its key changes: the recipe's settings for it, its input's hash, the
versions of the packages its row names, and the data it reads.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.errors import BadInputError
from exporter.fsutil import sha256_of

if TYPE_CHECKING:
    from exporter.recipe import Recipe

STATE_DIR = ".cnnexport"


def data_fingerprint(where: str | None) -> str | None:
    """Cheap identity of calibration/evaluation data: names, sizes and mtimes (not contents)."""
    if where is None or where == "digits":
        return where
    path = Path(where)
    if path.is_dir():
        items = sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()
    if path.is_file():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return f"missing:{where}"


def stage_key(recipe: Recipe, stage: Any, input_sha: str, versions: dict, extra_inputs: list | tuple = ()) -> str:
    r = recipe
    payload: dict[str, Any] = {
        "extra_inputs": [[s.name, hashlib.sha256(s.array.tobytes()).hexdigest()] for s in extra_inputs],
        "stage": stage.spec.name,
        "options": stage.options,
        "input": input_sha,
        "model": r.model.model_dump(mode="json"),
        "verify": r.verify.model_dump(mode="json"),
        "images": data_fingerprint(r.verify.images),
        "output_name": r.outputs.name,
        # only what made this stage: upgrading OpenVINO rebuilds the OpenVINO stage, not the ONNX one
        "versions": {k: v for k, v in versions.items() if k in ("cnnexport", "python", *stage.spec.versioned())},
    }
    if stage.spec.reads_data:
        payload["calibration"] = [r.calibration.model_dump(mode="json"), data_fingerprint(r.calibration.data)]
        payload["evaluation"] = [r.evaluation.model_dump(mode="json"), data_fingerprint(r.evaluation.data)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stamp_path(out_dir: Path, name: str) -> Path:
    return out_dir / STATE_DIR / "stages" / f"{name}.json"


def read_stamp(out_dir: Path, name: str, key: str) -> dict | None:
    """The stamp's manifest entry if its key matches and every file is intact."""
    try:
        stamp = json.loads(stamp_path(out_dir, name).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("key") != key:
        return None
    for f in stamp["entry"]["files"]:
        path = out_dir / f["path"]
        if not path.exists() or sha256_of(path) != f["sha256"]:
            return None
    return stamp["entry"]


class OutputLock:
    """One run per output folder at a time (an flock: released even if the process is killed)."""

    def __init__(self, out_dir: Path, shared: bool = False):
        # shared: a fleet's stage tasks of one checkpoint write side by side (each its own staging folder and stamp)
        state = out_dir / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        self.handle = open(state / "lock", "w")
        try:
            fcntl.flock(self.handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise BadInputError(
                f"another cnnexport run is writing to {out_dir}; wait for it to finish or choose another -o"
            ) from None

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def sweep_stale_staging(out_dir: Path) -> None:
    """Staging folders left by a killed run (we hold the lock, so none is in use)."""
    for stale in out_dir.glob(".cnnexport-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
