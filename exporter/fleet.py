"""`cnnexport run` over many checkpoints (a fleet): one folder each, here or on a Ray cluster.

Each checkpoint is today's one-checkpoint run (exporter.run.run_recipe) into OUT/<folder>, with
its manifest, stamps and report, so a fleet's per-checkpoint manifests are byte for byte what
running each checkpoint alone writes, and re-running a fleet is incremental through the stamps.
OUT gets fleet.json (one row per checkpoint) and fleet.md.

Engines: ``local`` runs the checkpoints one after another in this process. ``ray`` (an existing
engine, not a scheduler of our own) submits each checkpoint as Ray tasks: to the cluster in
``--ray-address`` / ``RAY_ADDRESS``, else to a local instance started for the run. A recipe's
stages whose row needs a GPU (TensorRT) run as a second task that asks Ray for a GPU, so they
land only on GPU nodes; where the cluster has no GPU at all they stay in the CPU task (and are
skipped there, as on any machine without TensorRT). A task whose worker dies is retried
(``RETRIES``): the stage that was interrupted left only a staging folder, swept on the retry.
"""

from __future__ import annotations

import contextlib
import glob as globbing
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError, CnnexportError
from exporter.fsutil import ensure_writable_dir, write_text_atomic
from exporter.targets import first_line

FLEET_MANIFEST = "fleet.json"
FLEET_MARKDOWN = "fleet.md"
RETRIES = 3  # a worker killed mid-stage (OOM killer, SIGKILL, a lost node): Ray runs the task again
RAY_HINT = "pip install 'cnnexport[ray]'"
ENGINES = ("auto", "local", "ray")


@dataclass(frozen=True)
class Member:
    """One checkpoint of the fleet and the folder of OUT it is built into."""

    checkpoint: Path
    folder: str


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


# ----------------------------------------------------------------- one checkpoint (any process)


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


# ----------------------------------------------------------------- the fleet


def planned_outputs(out_dir: Path) -> list[tuple[Path, bool]]:
    return [(out_dir / FLEET_MANIFEST, False), (out_dir / FLEET_MARKDOWN, False)]


def choose_engine(engine: str, count: int) -> str:
    """``auto``: Ray for more than one checkpoint where it is installed, else local."""
    if engine not in ENGINES:
        raise BadInputError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if count < 2:
        return "local"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "local"
    return "ray"


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
    recipe_data = recipe.model_dump(mode="json")
    gpu_stages = [s.spec.name for s in stages if s.spec.needs_gpu]
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
                    None,
                    jobs,
                    _prefixed(detail, m.folder),
                )
            )
            tracker.finished(rows[-1])
    else:
        rows = _run_on_ray(recipe_data, fleet, out_dir, reads, [s.spec.name for s in stages], gpu_stages, ray_address, tracker)
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


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailable(f"--engine ray needs Ray: {RAY_HINT}") from None
    return ray


def _run_on_ray(recipe_data, fleet: list[Member], out_dir: Path, reads, stage_names, gpu_stages, address, tracker) -> list[dict]:
    # Ray's driver prints its raylets' notices ("(raylet) A worker died ...") on stdout, which belongs to --json
    with contextlib.redirect_stdout(sys.stderr):
        return _submit(recipe_data, fleet, out_dir, reads, stage_names, gpu_stages, address, tracker)


def _submit(recipe_data, fleet: list[Member], out_dir: Path, reads, stage_names, gpu_stages, address, tracker) -> list[dict]:
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            with _keeping_sigterm():
                ray.init(
                    address=address or os.environ.get("RAY_ADDRESS") or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError: the cluster is not reachable
            raise BadInputError(f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} ({exc})") from None
    try:
        check_shared(ray, out_dir)
        recipe_data, reads = _absolute(recipe_data), tuple((role, Path(path).resolve()) for role, path in reads)
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        cpu_share = [s for s in stage_names if not (has_gpu and s in gpu_stages)]
        gpu_share = [s for s in stage_names if has_gpu and s in gpu_stages]
        cpu_task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(build_member)
        gpu_task = ray.remote(num_cpus=1, num_gpus=1, max_retries=RETRIES, retry_exceptions=False)(_after)
        pending = {}
        for m in fleet:
            # absolute: a worker's working folder is not the driver's (on another node it is not even there)
            target, checkpoint = str((out_dir / m.folder).resolve()), str(m.checkpoint.resolve())
            ref = cpu_task.remote(recipe_data, checkpoint, target, reads, cpu_share if gpu_share else None)
            if gpu_share:
                ref = gpu_task.remote(ref, recipe_data, checkpoint, target, reads, gpu_share)
            pending[ref] = m
            tracker.started(m.folder)
        rows: dict[str, dict] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            m = pending.pop(ready[0])
            try:
                row = ray.get(ready[0])
                if gpu_share:
                    row = _assemble(recipe_data, m, out_dir, reads, row)
                row["checkpoint"] = str(m.checkpoint)  # as the user named it, not as the worker was given it
            except Exception as exc:  # noqa: BLE001 - a task that failed RETRIES times (a worker killed each time)
                row = {
                    "checkpoint": str(m.checkpoint),
                    "folder": m.folder,
                    "status": "error",
                    "stages": {},
                    "error": f"its task failed {RETRIES + 1} times ({type(exc).__name__}: {first_line(exc)})",
                }
            rows[m.folder] = row
            tracker.finished(row)
        return [rows[m.folder] for m in fleet]
    finally:
        if started_here:
            ray.shutdown()


def _absolute(recipe_data: dict) -> dict:
    """The recipe's file paths made absolute: a worker's working folder is not the driver's."""
    data = json.loads(json.dumps(recipe_data))
    for section, key in (("calibration", "data"), ("evaluation", "data"), ("verify", "images"), ("model", "labels")):
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str) and Path(value).exists():
            data[section][key] = str(Path(value).resolve())
    return data


@contextlib.contextmanager
def _keeping_sigterm():
    """ray.init replaces the SIGTERM handler with sys.exit(15); the CLI's own (clean up as for Ctrl-C, exit 130) stays."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, mine)


def _after(cpu_row: dict, recipe_data, checkpoint, out_dir, reads, stages) -> dict:
    """The GPU share of a checkpoint, once its CPU share is done (its ONNX is what TensorRT reads)."""
    row = build_member(recipe_data, checkpoint, out_dir, reads, stages)
    return {"cpu": cpu_row, "gpu": row, "gpu_node": row.get("node"), "status": row["status"]}


def _assemble(recipe_data, m: Member, out_dir: Path, reads, shares: dict) -> dict:
    """Every stage is stamped by now: the whole recipe once more (all cached) writes the checkpoint's manifest."""
    row = build_member(recipe_data, str(m.checkpoint), str(out_dir / m.folder), reads)
    row["node"] = shares.get("cpu", {}).get("node")
    row["gpu_node"] = shares.get("gpu_node")
    return row


def check_shared(ray, out_dir: Path) -> None:
    """OUT must be one folder every node sees: a file written here is looked for from each node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = out_dir / f".cnnexport-fleet-probe-{uuid.uuid4().hex}"
    probe.write_text("cnnexport")
    try:
        look = ray.remote(num_cpus=0)(_sees)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        seen = ray.get(
            [
                look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe))
                for n in nodes
            ]
        )
        blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, seen) if not ok]
        if blind:
            raise BadInputError(
                f"-o {out_dir} is not visible from the Ray node(s) {', '.join(blind)}: a fleet's output folder must be on a "
                "filesystem every node mounts at the same path"
            )
    finally:
        probe.unlink(missing_ok=True)


def _sees(path: str) -> bool:
    return Path(path).is_file()


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
