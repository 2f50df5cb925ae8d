"""One checkpoint of a fleet, in whichever process runs it (this one, or a Ray worker): its recipe run and fleet row."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import CnnexportError


@dataclass(frozen=True)
class Member:
    """One checkpoint of the fleet and the folder of OUT it is built into."""

    checkpoint: Path
    folder: str


def _restricted(recipe_data: dict, stages: list[str] | None) -> dict:
    """The recipe with only ``stages`` (and what they read) enabled, and no bench step: one task's share."""
    if stages is None:
        return recipe_data
    data = json.loads(json.dumps(recipe_data))
    for name, section in data["stages"].items():
        section["enabled"] = bool(section.get("enabled")) and name in stages
    data.setdefault("bench", {})["enabled"] = False
    return data


def build_member(
    recipe_data: dict,
    checkpoint: str,
    out_dir: str,
    reads: tuple = (),
    stages: list[str] | None = None,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run one checkpoint's recipe (or ``stages`` of it) into ``out_dir``; its fleet row, whatever happened."""
    from exporter import recipe as recipe_mod
    from exporter.run import run_recipe

    started = time.perf_counter()
    row: dict = {"checkpoint": str(checkpoint), "folder": Path(out_dir).name, "node": _node_id()}
    try:
        recipe = recipe_mod.validate(_restricted(recipe_data, stages), "the fleet's recipe")
        result = run_recipe(recipe, Path(checkpoint), Path(out_dir), jobs, progress or (lambda _: None), reads=reads)
    except CnnexportError as exc:
        row.update(status="error", error=str(exc), stages={}, seconds=round(time.perf_counter() - started, 3))
        return row
    stage_rows = {}
    for o in result.outcomes:
        v = o.entry.get("verification", {}) if o.entry else {}
        stage_rows[o.name] = {
            "status": o.status,
            "cached": o.cached,
            "seconds": round(o.seconds, 3),
            "files": [{"path": f["path"], "sha256": f["sha256"]} for f in (o.entry or {}).get("files", [])],
            **{k: v[k] for k in ("max_rel_err", "cosine", "top1_agreement") if v.get(k) is not None},
        }
    failed = result.failed
    status = "pass" if not failed else "fail" if any(o.status == "fail" for o in failed) else "error"
    row.update(status=status, stages=stage_rows, seconds=round(time.perf_counter() - started, 3))
    if failed:
        row["error"] = f"stage {failed[0].name}: {failed[0].status}"
    return row


def _node_id() -> str | None:
    """The Ray node a task ran on (None outside Ray): where the GPU stages landed is part of the row."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return None
