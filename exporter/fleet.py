"""`cnnexport run` over many checkpoints (a fleet): one folder each, here or on a Ray cluster.

Each checkpoint is today's one-checkpoint run (exporter.run.run_recipe) into OUT/<folder>, with
its manifest, stamps and report, so a fleet's per-checkpoint manifests are byte for byte what
running each checkpoint alone writes, and re-running a fleet is incremental through the stamps.
OUT gets fleet.json (one row per checkpoint) and fleet.md.

Engines: ``local`` runs the checkpoints one after another in this process; ``ray`` submits them
as Ray tasks (exporter/fleet_ray.py).
"""

from __future__ import annotations

import glob as globbing
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exporter.errors import BadInputError
from exporter.fleet_member import Member, build_member
from exporter.fsutil import ensure_writable_dir, write_text_atomic
from exporter.run_cache import OutputLock

FLEET_MANIFEST = "fleet.json"
FLEET_MARKDOWN = "fleet.md"
ENGINES = ("auto", "local", "ray")


@dataclass
class FleetResult:
    out_dir: Path
    engine: str
    rows: list[dict]
    seconds: float
    manifest: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "pass"]

    @property
    def verification_failed(self) -> bool:
        return any(r["status"] == "fail" for r in self.rows)


# ----------------------------------------------------------------- which checkpoints


def collect(checkpoints: list[Path], from_list: Path | None = None, pattern: str | None = None) -> list[Path]:
    """The checkpoints named, listed in ``from_list`` (one per line, # comments) and matched by ``pattern``."""
    found = [Path(c) for c in checkpoints]
    if from_list is not None:
        try:
            lines = Path(from_list).read_text().splitlines()
        except OSError as exc:
            raise BadInputError(f"--from {from_list}: cannot read it ({exc.strerror})") from None
        base = Path(from_list).parent
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line:
                path = Path(line)
                found.append(path if path.is_absolute() else base / path)
    if pattern is not None:
        matched = sorted(Path(p) for p in globbing.glob(pattern, recursive=True) if Path(p).is_file())
        if not matched:
            raise BadInputError(f"--glob {pattern!r} matches no file")
        found += matched
    unique: list[Path] = []
    for path in found:
        if not any(os.path.realpath(path) == os.path.realpath(u) for u in unique):
            unique.append(path)
    if not unique:
        raise BadInputError("no checkpoints: give CKPT..., --from LIST.txt or --glob 'PATTERN'")
    return unique


def members(checkpoints: list[Path]) -> list[Member]:
    """A folder per checkpoint: its name without suffixes, with its parent folders prepended where two collide."""
    parents = {p: Path(os.path.abspath(p)).parent.parts[1:] for p in checkpoints}
    depth = dict.fromkeys(checkpoints, 0)
    while True:
        names = {p: "-".join([*parents[p][len(parents[p]) - depth[p] :], p.name.split(".")[0]]) for p in checkpoints}
        clashing = [p for p in checkpoints if list(names.values()).count(names[p]) > 1]
        if not clashing:
            return [Member(p, names[p]) for p in checkpoints]
        if any(depth[p] >= len(parents[p]) for p in clashing):
            raise BadInputError(f"two checkpoints would share the folder {names[clashing[0]]}: {clashing[0]}, {clashing[1]}")
        for p in clashing:
            depth[p] += 1


# ----------------------------------------------------------------- the fleet


def planned_outputs(out_dir: Path) -> list[tuple[Path, bool]]:
    return [(out_dir / FLEET_MANIFEST, False), (out_dir / FLEET_MARKDOWN, False)]


def choose_engine(engine: str, count: int) -> str:
    """``auto``: Ray for more than one checkpoint where it is installed, else local."""
    if engine not in ENGINES:
        raise BadInputError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    return "ray" if count > 1 and _ray_installed() else "local"


def _ray_installed() -> bool:
    """Whether Ray can be imported, without importing it (a second): --help and a one-checkpoint run stay quick."""
    import importlib.util
    import sys

    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    return importlib.util.find_spec("ray") is not None


def run_fleet(
    recipe,
    checkpoints: list[Path],
    out_dir: Path,
    engine: str = "auto",
    jobs: int = 1,
    progress: Callable[[str], None] = lambda _: None,
    ray_address: str | None = None,
    reads: tuple = (),
    detail: Callable[[str], None] | None = None,
) -> FleetResult:
    """Every checkpoint through ``recipe`` into OUT/<folder>; fleet.json and fleet.md in OUT.

    ``progress`` gets one line per finished checkpoint; ``detail`` (local engine) each checkpoint's own lines.
    """
    from exporter.guard import refuse_clobbering
    from exporter.run import plan, run_inputs

    stages = plan(recipe)  # a recipe that plans nothing is refused before any checkpoint
    fleet = members(checkpoints)
    out_dir = Path(out_dir)
    engine = choose_engine(engine, len(fleet))
    every_input = [i for m in fleet for i in run_inputs(recipe, m.checkpoint, reads)]
    refuse_clobbering(planned_outputs(out_dir) + [(out_dir / m.folder, True) for m in fleet], every_input)
    out_dir = ensure_writable_dir(out_dir)
    lock = OutputLock(out_dir)  # one fleet per OUT at a time (a nightly job that overran meets the next one here)
    try:
        return _run_locked(recipe, fleet, out_dir, engine, jobs, progress, ray_address, reads, detail, stages)
    finally:
        lock.release()


def _run_locked(recipe, fleet, out_dir, engine, jobs, progress, ray_address, reads, detail, stages) -> FleetResult:
    recipe_data = recipe.model_dump(mode="json")
    started = time.perf_counter()
    tracker = Progress(len(fleet), progress)
    if engine == "local":
        rows = []
        for m in fleet:
            tracker.started(m.folder)
            rows.append(
                build_member(
                    recipe_data,
                    str(m.checkpoint),
                    str(out_dir / m.folder),
                    reads,
                    jobs,
                    _prefixed(detail, m.folder),
                )
            )
            tracker.finished(rows[-1])
    else:
        from exporter.fleet_ray import run_on_ray

        rows = run_on_ray(recipe_data, fleet, out_dir, reads, stages, ray_address, tracker)
    result = FleetResult(out_dir, engine, rows, time.perf_counter() - started)
    result.manifest = fleet_manifest(recipe, result)
    write_text_atomic(out_dir / FLEET_MANIFEST, json.dumps(result.manifest, indent=2, sort_keys=True) + "\n")
    write_text_atomic(out_dir / FLEET_MARKDOWN, fleet_markdown(result))
    return result


def _prefixed(detail: Callable[[str], None] | None, folder: str) -> Callable[[str], None] | None:
    """A checkpoint's own progress lines, named by its folder."""
    if detail is None:
        return None
    return lambda line: detail(f"{folder}: {line}")


class Progress:
    """One line per finished checkpoint: done / failed / running, stages per second, ETA."""

    def __init__(self, total: int, emit: Callable[[str], None]):
        self.total, self.emit, self.started_at = total, emit, time.perf_counter()
        self.done = self.failed = self.running = self.stages = 0

    def started(self, _folder: str, count: int = 1) -> None:
        self.running += count

    def finished(self, row: dict) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self.failed += row["status"] != "pass"
        self.stages += len(row.get("stages", {}))
        elapsed = time.perf_counter() - self.started_at
        eta = elapsed / self.done * (self.total - self.done)
        self.emit(
            f"[{self.done}/{self.total} done, {self.failed} failed, {self.running} running; "
            f"{self.stages / max(elapsed, 1e-9):.2f} stages/s, ETA {eta:.0f}s] {row['folder']}: {row['status']}"
            + (f" ({row['error']})" if row.get("error") else "")
        )


# ----------------------------------------------------------------- reports


def fleet_manifest(recipe, result: FleetResult) -> dict:
    rows = result.rows
    return {
        "recipe": recipe.name,
        "engine": result.engine,
        "checkpoints": rows,
        "summary": {
            "checkpoints": len(rows),
            "passed": sum(r["status"] == "pass" for r in rows),
            "failed": sum(r["status"] == "fail" for r in rows),
            "errors": sum(r["status"] == "error" for r in rows),
            "seconds": round(result.seconds, 3),
        },
    }


def fleet_markdown(result: FleetResult) -> str:
    stage_names: list[str] = []
    for row in result.rows:
        stage_names += [s for s in row.get("stages", {}) if s not in stage_names]
    s = result.manifest["summary"]
    lines = [
        f"# Fleet: {s['checkpoints']} checkpoints, recipe {result.manifest['recipe']}",
        "",
        f"{s['passed']} passed, {s['failed']} failed verification, {s['errors']} errors; engine {result.engine}, "
        f"{s['seconds']:.1f} s.",
        "",
        "| checkpoint | folder | status | " + " | ".join(stage_names) + " | seconds |",
        "|---|---|---|" + "---|" * len(stage_names) + "---:|",
    ]
    for row in result.rows:
        cells = [row.get("stages", {}).get(n, {}).get("status", "-") for n in stage_names]
        status = row["status"] + (f" ({row['error']})" if row.get("error") else "")
        lines.append(
            f"| {Path(row['checkpoint']).name} | {row['folder']} | {status} | "
            + " | ".join(cells)
            + f" | {row.get('seconds', 0):.1f} |"
        )
    return "\n".join(lines).replace("\\", "/") + "\n"
