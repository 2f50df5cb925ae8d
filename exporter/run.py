"""`cnnexport run --recipe`: the recipe's stages as a graph, cached, parallel and resumable.

Every stage is a row of the table (exporter/kinds.py) and runs the same library call as its
verb (exporter.build.build), so a recipe run and `cnnexport onnx` cannot drift.

Caching: each finished stage leaves a stamp (.cnnexport/stages/NAME.json) holding a key made
of the stage's input sha256, its options, the model/verify/calibration settings and the
library versions, plus its files' sha256 and its verification. A later run whose key matches
and whose files are intact reuses the stamp and does no work (not even importing torch).
Stamps are written only after the artifact is in place, so a run interrupted at any point
resumes where it stopped and never leaves a half file under a final name.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import BackendUnavailable, BadInputError, CnnexportError
from exporter.fsutil import ensure_writable_dir, sha256_of, write_text_atomic
from exporter.kinds import KINDS, ArtifactKind
from exporter.recipe import Recipe
from exporter.run_cache import STATE_DIR, OutputLock, read_stamp, stage_key, stamp_path, sweep_stale_staging
from exporter.run_markdown import run_markdown

# torch.jit.trace / torch.export are not thread-safe: stages that trace take turns.
TRACE_LOCK = threading.Lock()


@dataclass
class Outcome:
    name: str
    status: str  # pass | fail | skipped (reason) | error (reason)
    cached: bool = False
    seconds: float = 0.0
    entry: dict = field(default_factory=dict)  # what goes into the manifest
    node: str | None = None  # the Ray node a fleet's stage task ran on (not part of the manifest)


class RunContext:
    def __init__(self, recipe: Recipe, checkpoint: Path, out_dir: Path, progress, extra_inputs: list | None = None, loaded=None):
        self.recipe, self.checkpoint, self.out_dir, self.progress = recipe, checkpoint, out_dir, progress
        self.extra_inputs = list(extra_inputs or [])  # verification sets a Python caller adds (the demo's held-out digits)
        self.base = recipe.outputs.name or checkpoint.name.split(".")[0]
        self._loaded = loaded  # a fleet worker's copy of this very checkpoint, loaded by an earlier stage task
        self.load_error: CnnexportError | None = None  # the model itself is unusable: every stage would fail alike
        self._lock = threading.Lock()

    def loaded(self):
        """The checkpoint, loaded once and only when some stage actually has work to do."""
        with self._lock:
            if self.load_error is not None:
                raise self.load_error
            if self._loaded is None:
                from exporter.loading.checkpoint import load_checkpoint
                from exporter.outputs import parse_tasks
                from exporter.spec import read_labels

                m = self.recipe.model
                try:
                    overrides = {
                        "input_shape": m.input_shape,
                        "mean": m.mean,
                        "std": m.std,
                        "labels": read_labels(m.labels) if m.labels else None,
                    }
                    self.progress(f"loading {self.checkpoint}")
                    tasks = parse_tasks(",".join(f"{k}={v}" for k, v in m.task.items()) if isinstance(m.task, dict) else m.task)
                    self._loaded = load_checkpoint(
                        self.checkpoint,
                        m.arch,
                        m.arch_kwargs,
                        m.trust_pickle,
                        overrides,
                        weights=m.weights,
                        progress=self.progress,
                        outputs=tuple(m.outputs) if m.outputs else None,
                        tasks=tasks,
                    )
                except CnnexportError as exc:
                    self.load_error = exc
                    raise
            return self._loaded

    def verify_options(self, precision: str):
        from exporter.pipeline import VerifyOptions

        v = self.recipe.verify
        tol = getattr(v, precision)
        return VerifyOptions(
            enabled=v.enabled,
            batch_sizes=tuple(v.batch_sizes),
            seed=v.seed,
            images=Path(v.images) if v.images else None,
            extra_inputs=list(self.extra_inputs),
            precision=precision,
            max_rel_err=tol.max_rel_err,
            min_cosine=tol.min_cosine,
            min_top1=tol.min_top1,
            conf=v.detect.conf,
            iou=v.detect.iou,
        )

    def output(self, row: ArtifactKind, options=None) -> Path:
        return self.out_dir / f"{self.base}{row.suffix_of(options) if options is not None else row.suffix}"


def _run_stage(ctx: RunContext, stage: PlannedStage, upstream: Path | None):
    """Build one stage with the same library call as its verb; the last artifact is the stage's."""
    from exporter import build

    row = stage.spec
    options = row.options_from_recipe(stage.options, ctx.out_dir, ctx.base)
    r = ctx.recipe
    results = build.build(
        row,
        upstream or ctx.checkpoint,
        options,
        output=ctx.output(row, options),
        loaded=ctx.loaded(),
        verify=ctx.verify_options(row.precision(options)),
        calibration=r.calibration,
        evaluation=r.evaluation.data if row.reads_data else None,
        progress=ctx.progress,
    )
    last = results[-1]
    if len(results) > 1:  # what the artifact was built from (the Q/DQ or fp16 ONNX of an engine) travels with it
        last.files = [*last.files, *[f for res in results[:-1] for f in res.files]]
    return last


# ----------------------------------------------------------------- plan, keys, stamps


@dataclass
class PlannedStage:
    spec: ArtifactKind  # the stage's row of the table
    upstream: str | None
    options: dict  # the recipe's stage section, as written (JSON-able: it is part of the cache key)

    def options_model(self):
        """The kind's options model (recipe-only keys left out: they do not change what the stage is)."""
        return self.spec.parse({k: v for k, v in self.options.items() if k not in self.spec.recipe_fields})


def plan(recipe: Recipe) -> list[PlannedStage]:
    """Enabled stages in dependency order, each bound to its upstream (or an error if none)."""
    stages = recipe.stages
    enabled = {s.name for s in KINDS if getattr(stages, s.name).enabled}
    out = []
    for spec in KINDS:
        if spec.name not in enabled:
            continue
        options = getattr(stages, spec.name).model_dump(mode="json")
        options.pop("enabled", None)
        stage = PlannedStage(spec, None, options)
        needs = spec.upstream_choices(stage.options_model())
        if needs:
            stage.upstream = next((n for n in needs if n in enabled), None)
            if stage.upstream is None:
                raise BadInputError(
                    f"stage {spec.name} needs one of: {', '.join('stages.' + n for n in needs)} (enable it in the recipe)"
                )
        out.append(stage)
    if not out:
        raise BadInputError("the recipe enables no stages")
    return out


def _status(verification: dict) -> str:
    return verification["status"] if verification["status"] != "skipped" else f"skipped ({verification['reason']})"


def _entry_from_result(result, out_dir: Path, model: dict) -> dict:
    """Manifest entry: deterministic (no timings), paths relative to the output folder."""
    from exporter.fsutil import size_of

    files = []
    primary_first = sorted(result.files, key=lambda f: Path(f) != Path(result.path))  # downstream stages read files[0]
    for f in primary_first:
        files.append({"path": str(Path(f).relative_to(out_dir)), "sha256": sha256_of(f), "bytes": size_of(f)})
    # absolute paths of this output folder would make manifests differ between folders
    details = json.loads(json.dumps(result.details, default=str).replace(str(out_dir), "."))
    return {
        "kind": result.kind,
        "status": _status(result.verification.to_dict()),
        "files": files,
        "verification": result.verification.to_dict(),
        "details": details,
        "model": model,
    }


# ----------------------------------------------------------------- execution


@dataclass
class RunResult:
    out_dir: Path
    outcomes: list[Outcome]
    manifest: dict
    seconds: float
    bench: dict | None = None  # the recipe's bench step (timings: bench.json, not the manifest)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "fail" or o.status.startswith("error")]


NO_CALIBRATION = "needs calibration data: set calibration.data or --calib"


def needs_calibration(stage: PlannedStage) -> bool:
    """INT8 stages calibrate; so does a TensorRT engine built in int8 (the row says)."""
    return stage.spec.calibrates(stage.options_model())


def check_run_data(recipe: Recipe, stages: list[PlannedStage], ctx: RunContext) -> None:
    """Open and count the calibration, evaluation and verify.images sources the stages will read."""
    from exporter.inputs import check_source

    reading = [s for s in stages if s.spec.reads_data]
    sources: list[tuple[str | None, str, dict[str, Any]]] = [
        (recipe.calibration.data, "calibration.data", {}) if reading else (None, "", {}),
        (recipe.evaluation.data, "evaluation.data", {"labels": True, "split": "test"}) if reading else (None, "", {}),
        (recipe.verify.images, "verify.images", {"verification": True}) if recipe.verify.enabled else (None, "", {}),
    ]
    given = [(where, key, how) for where, key, how in sources if where is not None]
    if not given:
        return
    spec = ctx.loaded().spec
    for where, key, how in given:
        check_source(where, spec, key, **how)


def run_inputs(recipe: Recipe, checkpoint: Path, reads: tuple = ()) -> list:
    """Every user file a run reads, as (role, path), for exporter.guard."""
    m = recipe.model
    arch_file = (m.arch or "").rpartition(":")[0]
    return [
        ("the checkpoint", checkpoint),
        ("calibration.data", recipe.calibration.data),
        ("evaluation.data", recipe.evaluation.data),
        ("verify.images", recipe.verify.images),
        ("model.labels", m.labels),
        *((("model.arch's file", arch_file),) if arch_file.endswith(".py") else ()),
        *reads,
    ]


def planned_outputs(ctx: RunContext, stages: list[PlannedStage]) -> list[tuple[Path, bool]]:
    """Every path a run may write, as (path, is a folder that gets replaced)."""
    from exporter.build import companions

    out = ctx.out_dir
    planned = [(out / name, False) for name in ("manifest.json", "report.md", "bench.json")] + [(out / STATE_DIR, True)]
    for stage in stages:
        row = stage.spec
        options = row.options_from_recipe(stage.options, out, ctx.base)
        primary = ctx.output(row, options)
        planned += [(primary, row.folder), *((c, False) for c in companions(primary)), *row.extra_outputs_of(options)]
    return planned


def run_recipe(
    recipe: Recipe,
    checkpoint: Path,
    out_dir: Path,
    jobs: int = 1,
    progress=lambda _: None,
    extra_inputs: list | None = None,
    reads: tuple = (),
) -> RunResult:
    """Every stage of ``recipe`` from ``checkpoint`` into ``out_dir``; ``reads``: more user files (the recipe file)."""
    from exporter.guard import protecting, refuse_clobbering

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise BadInputError(f"checkpoint {checkpoint} does not exist")
    if jobs < 1:
        raise BadInputError("--jobs must be at least 1")
    stages = plan(recipe)
    ctx = RunContext(recipe, checkpoint, Path(out_dir), progress, extra_inputs)
    inputs = run_inputs(recipe, checkpoint, reads)
    refuse_clobbering(planned_outputs(ctx, stages), inputs)
    with protecting(inputs):
        return _run_checked(recipe, checkpoint, ctx, stages, jobs, progress)


def _run_checked(recipe: Recipe, checkpoint: Path, ctx: RunContext, stages: list[PlannedStage], jobs: int, progress) -> RunResult:
    from exporter.report import versions as library_versions

    out_dir = ctx.out_dir
    calibrated = [s.spec.name for s in stages if needs_calibration(s)]
    if calibrated and recipe.calibration.data is None:
        progress(f"{', '.join(calibrated)}: skipped ({NO_CALIBRATION})")
    check_run_data(recipe, stages, ctx)  # every stage's data sources, before stage one and before any file
    created = not Path(out_dir).exists()
    out_dir = ctx.out_dir = ensure_writable_dir(Path(out_dir))
    lock = OutputLock(out_dir)
    started = time.perf_counter()
    try:
        sweep_stale_staging(out_dir)
        versions = library_versions()
        checkpoint_sha = sha256_of(checkpoint)
        outcomes = execute(ctx, stages, versions, checkpoint_sha, jobs)
        if ctx.load_error is not None:
            # an unreadable checkpoint (or model section) is bad input for the whole run, not one
            # failed stage per artifact: exit 2 with its own message and no manifest
            raise ctx.load_error
        return write_reports(recipe, checkpoint, out_dir, checkpoint_sha, versions, outcomes, started, progress)
    finally:
        lock.release()
        if created and ctx.load_error is not None:
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing was built: leave no empty output folder behind


def write_reports(
    recipe: Recipe,
    checkpoint: Path,
    out_dir: Path,
    checkpoint_sha: str,
    versions: dict,
    outcomes: list[Outcome],
    started: float,
    progress,
) -> RunResult:
    """manifest.json, the bench step's bench.json and report.md, from every stage's outcome."""
    manifest = build_manifest(recipe, checkpoint, checkpoint_sha, versions, outcomes)
    write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    result = RunResult(out_dir, outcomes, manifest, time.perf_counter() - started)
    if recipe.bench.enabled:
        from exporter.measure.recommend import bench_run

        result.bench = bench_run(outcomes, out_dir, recipe.bench, progress)
        if result.bench is not None:
            write_text_atomic(out_dir / "bench.json", json.dumps(result.bench, indent=2) + "\n")
        result.seconds = time.perf_counter() - started
    write_text_atomic(out_dir / "report.md", run_markdown(result))
    return result


def execute(
    ctx: RunContext, stages: list[PlannedStage], versions: dict, checkpoint_sha: str, jobs: int, given: dict | None = None
) -> list[Outcome]:
    """Run (or reuse the stamps of) ``stages``; ``given``: outcomes of upstream stages another task ran."""
    done: dict[str, Outcome] = dict(given or {})
    pending = list(stages)

    def input_sha(stage: PlannedStage) -> str | None:
        if stage.upstream is None:
            return checkpoint_sha
        up = done[stage.upstream]
        return up.entry["files"][0]["sha256"] if up.status == "pass" or up.status.startswith("skipped (--no-verify") else None

    def run_one(stage: PlannedStage) -> Outcome:
        name = stage.spec.name
        sha = input_sha(stage)
        if sha is None:
            return Outcome(name, f"skipped (needs {stage.upstream}, which did not pass)")
        if needs_calibration(stage) and ctx.recipe.calibration.data is None:
            return Outcome(name, f"skipped ({NO_CALIBRATION})")
        key = stage_key(ctx.recipe, stage, sha, versions, ctx.extra_inputs)
        cached = read_stamp(ctx.out_dir, name, key)
        if cached is not None:
            ctx.progress(f"{name}: cached")
            return Outcome(name, cached["status"], True, 0.0, cached)
        upstream_path = ctx.out_dir / done[stage.upstream].entry["files"][0]["path"] if stage.upstream else None
        t0 = time.perf_counter()
        try:
            if stage.spec.traces:
                with TRACE_LOCK:
                    result = _run_stage(ctx, stage, upstream_path)
            else:
                result = _run_stage(ctx, stage, upstream_path)
        except BackendUnavailable as exc:
            return Outcome(name, f"skipped ({exc})", seconds=time.perf_counter() - t0)
        except CnnexportError as exc:
            return Outcome(name, f"error ({exc})", seconds=time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        from exporter.report import model_section

        entry = _entry_from_result(result, ctx.out_dir, model_section(ctx.loaded()))
        status = entry["status"]
        if result.files and result.verification.status != "fail":
            write_text_atomic(stamp_path(ctx.out_dir, name), json.dumps({"key": key, "entry": entry}, sort_keys=True))
        return Outcome(name, status, False, seconds, entry)

    if jobs == 1:
        for stage in pending:
            done[stage.spec.name] = run_one(stage)
            ctx.progress(f"{stage.spec.name}: {done[stage.spec.name].status}")
        return [done[s.spec.name] for s in stages]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future, PlannedStage] = {}
        while pending or running:
            ready = [s for s in pending if s.upstream is None or s.upstream in done]
            for stage in ready:
                pending.remove(stage)
                running[pool.submit(run_one, stage)] = stage
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                done[stage.spec.name] = future.result()
                ctx.progress(f"{stage.spec.name}: {done[stage.spec.name].status}")
    return [done[s.spec.name] for s in stages]


def build_manifest(recipe: Recipe, checkpoint: Path, checkpoint_sha: str, versions: dict, outcomes: list[Outcome]) -> dict:
    model = next((o.entry.get("model") for o in outcomes if o.entry.get("model")), None)
    return {
        "checkpoint": {"file": checkpoint.name, "sha256": checkpoint_sha, "bytes": checkpoint.stat().st_size},
        "recipe": recipe.model_dump(mode="json"),
        "versions": versions,
        "model": model,
        "stages": {
            o.name: {
                "status": o.status,
                **({k: v for k, v in o.entry.items() if k != "model"} if o.entry else {}),
            }
            for o in outcomes
        },
    }
