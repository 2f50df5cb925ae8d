"""One checkpoint of a fleet, in whichever process runs it (this one, or a Ray worker): its recipe run and fleet row.

The local engine runs a checkpoint's whole recipe at once (build_member). On Ray each stage is a task
of its own (build_stage): it gets the outcome of its upstream stage from the task that built it, runs
its stage exactly as `cnnexport run` does (same keys, same stamps) and returns its outcome; a last
task (finish_member) writes manifest.json, report.md and bench.json from all of them, so the manifest
is byte for byte the one running the checkpoint alone writes. A worker process keeps the checkpoint it
loaded last: the next stage of that checkpoint landing on it reuses the loaded reference.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import CnnexportError

_LOADED: dict = {}  # this worker's last loaded checkpoint: (sha256, model section) -> what load_checkpoint returned


@dataclass(frozen=True)
class Member:
    """One checkpoint of the fleet and the folder of OUT it is built into."""

    checkpoint: Path
    folder: str


def build_member(
    recipe_data: dict,
    checkpoint: str,
    out_dir: str,
    reads: tuple = (),
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run one checkpoint's whole recipe into ``out_dir`` (the local engine); its fleet row, whatever happened."""
    from exporter import recipe as recipe_mod
    from exporter.run import run_recipe

    started = time.perf_counter()
    row: dict = {"checkpoint": str(checkpoint), "folder": Path(out_dir).name, "node": _node_id()}
    try:
        recipe = recipe_mod.validate(recipe_data, "the fleet's recipe")
        result = run_recipe(recipe, Path(checkpoint), Path(out_dir), jobs, progress or (lambda _: None), reads=reads)
    except CnnexportError as exc:
        row.update(status="error", error=str(exc), stages={}, seconds=round(time.perf_counter() - started, 3))
        return row
    row.update(_row_of(result.outcomes), seconds=round(time.perf_counter() - started, 3))
    return row


def _row_of(outcomes) -> dict:
    """A fleet row's stages and status, from a run's outcomes."""
    stage_rows = {}
    for o in outcomes:
        v = o.entry.get("verification", {}) if o.entry else {}
        stage_rows[o.name] = {
            "status": o.status,
            "cached": o.cached,
            "seconds": round(o.seconds, 3),
            "files": [{"path": f["path"], "sha256": f["sha256"]} for f in (o.entry or {}).get("files", [])],
            **{k: v[k] for k in ("max_rel_err", "cosine", "top1_agreement", "reason") if v.get(k) not in (None, "")},
        }
    failed = [o for o in outcomes if o.status == "fail" or o.status.startswith("error")]
    status = "pass" if not failed else "fail" if any(o.status == "fail" for o in failed) else "error"
    return {
        "status": status,
        "stages": stage_rows,
        **({"error": f"stage {failed[0].name}: {failed[0].status}"} if failed else {}),
    }


@dataclass(frozen=True)
class ShareError:
    """What a stage task returns when the checkpoint itself is unusable (unreadable, wrong architecture, bad data)."""

    message: str


def build_stage(recipe_data: dict, checkpoint: str, out_dir: str, reads: tuple, name: str, *upstream):
    """One stage of one checkpoint (a Ray task): its Outcome, or a ShareError for the whole checkpoint."""
    from exporter import recipe as recipe_mod
    from exporter.fsutil import ensure_writable_dir, sha256_of
    from exporter.guard import protecting
    from exporter.report import versions as library_versions
    from exporter.run import RunContext, check_run_data, execute, plan, run_inputs
    from exporter.run_cache import OutputLock

    failed = next((u for u in upstream if isinstance(u, ShareError)), None)
    if failed is not None:
        return failed  # the checkpoint failed to load upstream: no need to try again
    try:
        recipe = recipe_mod.validate(recipe_data, "the fleet's recipe")
        stage = next(s for s in plan(recipe) if s.spec.name == name)
        sha = sha256_of(Path(checkpoint))
        key = (sha, json.dumps(recipe_data.get("model"), sort_keys=True))
        ctx = RunContext(recipe, Path(checkpoint), ensure_writable_dir(Path(out_dir)), lambda _: None, loaded=_LOADED.get(key))
        lock = OutputLock(ctx.out_dir, shared=True)
        try:
            with protecting(run_inputs(recipe, Path(checkpoint), reads)):
                check_run_data(recipe, [stage], ctx)
                outcome = execute(ctx, [stage], library_versions(), sha, 1, {u.name: u for u in upstream})[0]
        finally:
            lock.release()
        if ctx.load_error is not None:
            raise ctx.load_error
        if ctx._loaded is not None:
            _LOADED.clear()  # one checkpoint kept per worker: a zoo of them must not fill its memory
            _LOADED[key] = ctx._loaded
    except CnnexportError as exc:
        return ShareError(str(exc))
    outcome.node = _node_id()
    return outcome


def finish_member(recipe_data: dict, checkpoint: str, out_dir: str, *outcomes) -> dict:
    """A checkpoint's manifest, report and bench from its stage tasks' outcomes (a Ray task): its fleet row."""
    from exporter import recipe as recipe_mod
    from exporter.fsutil import sha256_of
    from exporter.report import versions as library_versions
    from exporter.run import write_reports
    from exporter.run_cache import OutputLock, sweep_stale_staging

    started = time.perf_counter()
    row: dict = {"checkpoint": str(checkpoint), "folder": Path(out_dir).name, "node": _node_id()}
    failed = next((o for o in outcomes if isinstance(o, ShareError)), None)
    if failed is not None:
        _remove_if_empty(Path(out_dir))
        row.update(status="error", error=failed.message, stages={}, seconds=0.0)
        return row
    recipe = recipe_mod.validate(recipe_data, "the fleet's recipe")
    lock = OutputLock(Path(out_dir))  # every stage task of this checkpoint is done: none is writing now
    try:
        sweep_stale_staging(Path(out_dir))  # what a killed worker's stage left before its retry
        write_reports(
            recipe,
            Path(checkpoint),
            Path(out_dir),
            sha256_of(Path(checkpoint)),
            library_versions(),
            list(outcomes),
            started,
            lambda _: None,
        )
    finally:
        lock.release()
    row.update(_row_of(outcomes), seconds=round(sum(o.seconds for o in outcomes), 3))
    row["nodes"] = {o.name: getattr(o, "node", None) for o in outcomes}
    return row


def _remove_if_empty(folder: Path) -> None:
    """The folder a broken checkpoint's stage tasks made holds only their lock: leave nothing behind (as a lone run)."""
    from exporter.run_cache import STATE_DIR

    state = folder / STATE_DIR
    if folder.is_dir() and [p.name for p in folder.iterdir()] == [STATE_DIR] and [p.name for p in state.iterdir()] == ["lock"]:
        shutil.rmtree(folder, ignore_errors=True)


def _node_id() -> str | None:
    """The Ray node a task ran on (None outside Ray): where the GPU stages landed is part of the row."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return None
