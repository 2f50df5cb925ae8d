"""`cnnexport run --recipe`: the recipe's stages as a graph, cached, parallel and resumable.

Every stage calls the same pipeline function as its single-stage verb (export_artifact,
simplify_artifact, quantize_artifact, ...), so a recipe run and `cnnexport onnx` cannot drift.

Caching: each finished stage leaves a stamp (.cnnexport/stages/NAME.json) holding a key made
of the stage's input sha256, its options, the model/verify/calibration settings and the
library versions, plus its files' sha256 and its verification. A later run whose key matches
and whose files are intact reuses the stamp and does no work (not even importing torch).
Stamps are written only after the artifact is in place, so a run interrupted at any point
resumes where it stopped and never leaves a half file under a final name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from exporter.errors import BackendUnavailable, BadInputError, CnnexportError
from exporter.fsutil import ensure_writable_dir, sha256_of, write_text_atomic
from exporter.recipe import Recipe

STATE_DIR = ".cnnexport"
# torch.jit.trace / torch.export are not thread-safe: stages that trace take turns.
TRACE_LOCK = threading.Lock()


@dataclass(frozen=True)
class StageSpec:
    name: str
    needs: tuple[str, ...]  # upstream stages in order of preference (first enabled one wins); () = the checkpoint
    suffix: str
    traces: bool
    precision: str
    run: Callable


@dataclass
class Outcome:
    name: str
    status: str  # pass | fail | skipped (reason) | error (reason)
    cached: bool = False
    seconds: float = 0.0
    entry: dict = field(default_factory=dict)  # what goes into the manifest


class RunContext:
    def __init__(self, recipe: Recipe, checkpoint: Path, out_dir: Path, progress):
        self.recipe, self.checkpoint, self.out_dir, self.progress = recipe, checkpoint, out_dir, progress
        self.base = recipe.outputs.name or checkpoint.name.split(".")[0]
        self._loaded = None
        self.load_error: CnnexportError | None = None  # the model itself is unusable: every stage would fail alike
        self._lock = threading.Lock()

    def loaded(self):
        """The checkpoint, loaded once and only when some stage actually has work to do."""
        with self._lock:
            if self.load_error is not None:
                raise self.load_error
            if self._loaded is None:
                from exporter.checkpoint import load_checkpoint
                from exporter.spec import read_labels

                m = self.recipe.model
                try:
                    overrides = {"input_shape": m.input_shape, "mean": m.mean, "std": m.std,
                                 "labels": read_labels(m.labels) if m.labels else None}
                    self.progress(f"loading {self.checkpoint}")
                    self._loaded = load_checkpoint(self.checkpoint, m.arch, m.arch_kwargs, m.trust_pickle, overrides, weights=m.weights,
                                                   progress=self.progress)
                except CnnexportError as exc:
                    self.load_error = exc
                    raise
            return self._loaded

    def verify_options(self, precision: str):
        from exporter.pipeline import VerifyOptions

        v = self.recipe.verify
        tol = getattr(v, precision)
        return VerifyOptions(enabled=v.enabled, batch_sizes=tuple(v.batch_sizes), seed=v.seed,
                             images=Path(v.images) if v.images else None, precision=precision,
                             max_rel_err=tol.max_rel_err, min_cosine=tol.min_cosine, min_top1=tol.min_top1)

    def output(self, spec: StageSpec) -> Path:
        return self.out_dir / f"{self.base}{spec.suffix}"


# ----------------------------------------------------------------- stage runners


def _torchscript(ctx: RunContext, spec: StageSpec, upstream: Path | None, options: dict):
    from exporter.pipeline import export_artifact

    return export_artifact("torchscript", ctx.loaded(), ctx.output(spec), {"script": options["script"]},
                           ctx.verify_options(spec.precision), progress=ctx.progress)


def _onnx(ctx: RunContext, spec: StageSpec, upstream: Path | None, options: dict):
    from exporter.pipeline import export_artifact

    stage_options = {k: options[k] for k in ("opset", "exporter", "input_name", "output_name")}
    return export_artifact("onnx", ctx.loaded(), ctx.output(spec), stage_options,
                           ctx.verify_options(spec.precision), progress=ctx.progress)


def _simplify(ctx: RunContext, spec: StageSpec, upstream: Path | None, options: dict):
    from exporter.pipeline import simplify_artifact

    return simplify_artifact(upstream, ctx.output(spec), ctx.loaded(), ctx.verify_options(spec.precision), progress=ctx.progress)


def _quantize(target: str | None):
    def run(ctx: RunContext, spec: StageSpec, upstream: Path | None, options: dict):
        from exporter.pipeline import QuantizeOptions, quantize_artifact

        r = ctx.recipe
        if spec.precision == "int8":
            q = QuantizeOptions(precision="int8", target=target, calibration=r.calibration.data, samples=r.calibration.samples,
                                holdout=r.calibration.holdout, method=options["method"], per_channel=options["per_channel"],
                                exclude=tuple(options["exclude"]), trt_version=options["trt_version"],
                                evaluation=r.evaluation.data, seed=r.verify.seed)
        else:
            q = QuantizeOptions(precision="fp16", calibration=r.calibration.data, samples=r.calibration.samples,
                                holdout=r.calibration.holdout, keep_io_types=options["keep_io_types"],
                                fp16_overflow=options["overflow"], evaluation=r.evaluation.data, seed=r.verify.seed)
        return quantize_artifact(upstream, q, ctx.output(spec), ctx.loaded(), ctx.verify_options(spec.precision), progress=ctx.progress)

    return run


def _coreml(ctx: RunContext, spec: StageSpec, upstream: Path | None, options: dict):
    from dataclasses import replace

    from exporter.pipeline import coreml_plan, export_artifact

    batch_range, compression, sizes, tolerance = coreml_plan(options["batch"], options["compress"], tuple(ctx.recipe.verify.batch_sizes))
    verify_options = replace(ctx.verify_options(tolerance or options["precision"]), batch_sizes=sizes)
    stage_options = {**options, "batch": batch_range, "compress": compression}
    return export_artifact("coreml", ctx.loaded(), ctx.output(spec), stage_options, verify_options, progress=ctx.progress)


def _tensorrt(ctx: RunContext, spec: StageSpec, upstream: Path | None, options: dict):
    """The engine where TensorRT runs; elsewhere (emit_script) the build kit, reported as skipped."""
    from exporter.stages.tensorrt import tensorrt_status
    from exporter.trt_pipeline import TensorRTOptions, tensorrt_artifacts

    r = ctx.recipe
    installed, _ = tensorrt_status()
    kit = ctx.out_dir / f"{ctx.base}-tensorrt-kit" if installed is None and options["emit_script"] else None
    trt = TensorRTOptions(
        precision=options["precision"], int8_mode=options["int8_mode"], batch=options["batch"], workspace=options["workspace"],
        optimization_level=options["optimization_level"], hardware_compatibility=options["hardware_compatibility"],
        version_compatible=options["version_compatible"], trt_version=options["trt_version"], emit_script=kit,
        calibration=r.calibration.data, samples=r.calibration.samples, holdout=r.calibration.holdout, seed=r.verify.seed,
    )
    results = tensorrt_artifacts(upstream, trt, ctx.output(spec), ctx.loaded(), ctx.verify_options(options["precision"]), progress=ctx.progress)
    engine = results[-1]
    if len(results) > 1:  # the Q/DQ or fp16 ONNX the engine was built from travels with it
        engine.files = [*engine.files, *[f for res in results[:-1] for f in res.files]]
    return engine


STAGES: list[StageSpec] = [
    StageSpec("torchscript", (), ".ts", True, "fp32", _torchscript),
    StageSpec("onnx", (), ".onnx", True, "fp32", _onnx),
    StageSpec("simplify", ("onnx",), ".sim.onnx", False, "fp32", _simplify),
    StageSpec("int8", ("simplify", "onnx"), ".int8.onnx", False, "int8", _quantize("cpu")),
    StageSpec("int8_tensorrt", ("simplify", "onnx"), ".int8-trt.onnx", False, "int8", _quantize("tensorrt")),
    StageSpec("fp16", ("simplify", "onnx"), ".fp16.onnx", False, "fp16", _quantize(None)),
    StageSpec("coreml", (), ".mlpackage", True, "fp16", _coreml),
    StageSpec("tensorrt", ("simplify", "onnx"), ".engine", False, "fp16", _tensorrt),
]


# ----------------------------------------------------------------- plan, keys, stamps


@dataclass
class PlannedStage:
    spec: StageSpec
    upstream: str | None
    options: dict


def plan(recipe: Recipe) -> list[PlannedStage]:
    """Enabled stages in dependency order, each bound to its upstream (or an error if none)."""
    stages = recipe.stages
    enabled = {s.name for s in STAGES if getattr(stages, s.name).enabled}
    out = []
    for spec in STAGES:
        if spec.name not in enabled:
            continue
        upstream = None
        if spec.needs:
            upstream = next((n for n in spec.needs if n in enabled), None)
            if upstream is None:
                raise BadInputError(f"stage {spec.name} needs one of: {', '.join('stages.' + n for n in spec.needs)} (enable it in the recipe)")
        options = getattr(stages, spec.name).model_dump(mode="json")
        options.pop("enabled", None)
        out.append(PlannedStage(spec, upstream, options))
    if not out:
        raise BadInputError("the recipe enables no stages")
    return out


def _data_fingerprint(where: str | None) -> str | None:
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


def stage_key(recipe: Recipe, stage: PlannedStage, input_sha: str, versions: dict) -> str:
    r = recipe
    payload = {
        "stage": stage.spec.name,
        "options": stage.options,
        "input": input_sha,
        "model": r.model.model_dump(mode="json"),
        "verify": r.verify.model_dump(mode="json"),
        "images": _data_fingerprint(r.verify.images),
        "output_name": r.outputs.name,
        "versions": versions,
    }
    if stage.spec.precision in ("int8", "fp16") and stage.spec.name != "coreml":
        payload["calibration"] = [r.calibration.model_dump(mode="json"), _data_fingerprint(r.calibration.data)]
        payload["evaluation"] = [r.evaluation.model_dump(mode="json"), _data_fingerprint(r.evaluation.data)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stamp_path(out_dir: Path, name: str) -> Path:
    return out_dir / STATE_DIR / "stages" / f"{name}.json"


def _read_stamp(out_dir: Path, name: str, key: str) -> dict | None:
    """The stamp's manifest entry if its key matches and every file is intact."""
    try:
        stamp = json.loads(_stamp_path(out_dir, name).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("key") != key:
        return None
    for f in stamp["entry"]["files"]:
        path = out_dir / f["path"]
        if not path.exists() or sha256_of(path) != f["sha256"]:
            return None
    return stamp["entry"]


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


class OutputLock:
    """One run per output folder at a time (an flock: released even if the process is killed)."""

    def __init__(self, out_dir: Path):
        state = out_dir / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        self.handle = open(state / "lock", "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise BadInputError(f"another cnnexport run is writing to {out_dir}; wait for it to finish or choose another -o") from None

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _sweep_stale_staging(out_dir: Path) -> None:
    """Staging folders left by a killed run (we hold the lock, so none is in use)."""
    for stale in out_dir.glob(".cnnexport-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


@dataclass
class RunResult:
    out_dir: Path
    outcomes: list[Outcome]
    manifest: dict
    seconds: float

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "fail" or o.status.startswith("error")]


NO_CALIBRATION = "needs calibration data: set calibration.data or --calib"


def needs_calibration(stage: PlannedStage) -> bool:
    """INT8 stages calibrate; so does a TensorRT engine built in int8."""
    return stage.spec.name in ("int8", "int8_tensorrt") or (stage.spec.name == "tensorrt" and stage.options.get("precision") == "int8")


def check_calibration_data(where: str, spec) -> None:
    """Refuse, before any work, calibration data that is not shaped like the model's inputs.

    The demo digits are 1-channel 8x8 images: stretched onto an RGB 224x224 model they calibrate
    it on data it never sees, and the held-out check on more digits would still say pass.
    """
    from exporter.inputs import DIGITS, open_source

    if str(where) == DIGITS and spec.channels != 1:
        raise BadInputError(
            f"calibration.data is the demo digits (1-channel 8x8 images) but this model takes "
            f"{spec.channels}x{spec.height}x{spec.width} inputs; calibrate on data like them: "
            "set calibration.data (or --calib) to an image folder or a .npy of normalized inputs"
        )
    open_source(where, spec)  # a missing path or a .npy of the wrong shape fails here, not after the other stages


def run_recipe(recipe: Recipe, checkpoint: Path, out_dir: Path, jobs: int = 1, progress=lambda _: None) -> RunResult:
    from exporter.report import versions as library_versions

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise BadInputError(f"checkpoint {checkpoint} does not exist")
    if jobs < 1:
        raise BadInputError("--jobs must be at least 1")
    stages = plan(recipe)
    ctx = RunContext(recipe, checkpoint, Path(out_dir), progress)
    calibrated = [s.spec.name for s in stages if needs_calibration(s)]
    if calibrated and recipe.calibration.data is None:
        progress(f"{', '.join(calibrated)}: skipped ({NO_CALIBRATION})")
    elif calibrated:
        check_calibration_data(recipe.calibration.data, ctx.loaded().spec)  # before any stage, before any file
    created = not Path(out_dir).exists()
    out_dir = ctx.out_dir = ensure_writable_dir(Path(out_dir))
    lock = OutputLock(out_dir)
    started = time.perf_counter()
    try:
        _sweep_stale_staging(out_dir)
        versions = library_versions()
        checkpoint_sha = sha256_of(checkpoint)
        outcomes = _execute(ctx, stages, versions, checkpoint_sha, jobs)
        if ctx.load_error is not None:
            # an unreadable checkpoint (or model section) is bad input for the whole run, not one
            # failed stage per artifact: exit 2 with its own message and no manifest
            raise ctx.load_error
        manifest = build_manifest(recipe, checkpoint, checkpoint_sha, versions, outcomes)
        write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        result = RunResult(out_dir, outcomes, manifest, time.perf_counter() - started)
        write_text_atomic(out_dir / "report.md", render_markdown(result))
        return result
    finally:
        lock.release()
        if created and ctx.load_error is not None:
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing was built: leave no empty output folder behind


def _execute(ctx: RunContext, stages: list[PlannedStage], versions: dict, checkpoint_sha: str, jobs: int) -> list[Outcome]:
    done: dict[str, Outcome] = {}
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
        key = stage_key(ctx.recipe, stage, sha, versions)
        cached = _read_stamp(ctx.out_dir, name, key)
        if cached is not None:
            ctx.progress(f"{name}: cached")
            return Outcome(name, cached["status"], True, 0.0, cached)
        upstream_path = ctx.out_dir / done[stage.upstream].entry["files"][0]["path"] if stage.upstream else None
        t0 = time.perf_counter()
        try:
            if stage.spec.traces:
                with TRACE_LOCK:
                    result = stage.spec.run(ctx, stage.spec, upstream_path, stage.options)
            else:
                result = stage.spec.run(ctx, stage.spec, upstream_path, stage.options)
        except BackendUnavailable as exc:
            return Outcome(name, f"skipped ({exc})", seconds=time.perf_counter() - t0)
        except CnnexportError as exc:
            return Outcome(name, f"error ({exc})", seconds=time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        from exporter.report import model_section

        entry = _entry_from_result(result, ctx.out_dir, model_section(ctx.loaded()))
        status = entry["status"]
        if result.files and result.verification.status != "fail":
            write_text_atomic(_stamp_path(ctx.out_dir, name), json.dumps({"key": key, "entry": entry}, sort_keys=True))
        return Outcome(name, status, False, seconds, entry)

    if jobs == 1:
        for stage in pending:
            done[stage.spec.name] = run_one(stage)
            ctx.progress(f"{stage.spec.name}: {done[stage.spec.name].status}")
        return [done[s.spec.name] for s in stages]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {}
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


def render_markdown(result: RunResult) -> str:
    m = result.manifest
    lines = [
        f"# cnnexport run: {m['recipe']['name']}",
        "",
        f"checkpoint `{m['checkpoint']['file']}` (sha256 {m['checkpoint']['sha256'][:12]}…)"
        + (f", model {m['model']['arch']} {m['model']['input_shape']}, {m['model']['num_classes']} classes" if m.get("model") else ""),
        "",
        "| stage | artifact | status | max err/range | cosine | top-1 | time | cached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in result.outcomes:
        v = o.entry.get("verification", {}) if o.entry else {}
        files = ", ".join(f"`{f['path']}`" for f in o.entry.get("files", [])) if o.entry else "-"

        def fmt(x, spec):
            return "-" if x is None else format(x, spec)

        lines.append(
            f"| {o.name} | {files or '-'} | {o.status} | {fmt(v.get('max_rel_err'), '.2e')} | {fmt(v.get('cosine'), '.6f')} "
            f"| {fmt(v.get('top1_agreement'), '.3f')} | {o.seconds:.1f}s | {'yes' if o.cached else 'no'} |"
        )
    rules = sorted({f"{o.entry['verification']['precision']}: {o.entry['verification']['rule']}" for o in result.outcomes
                    if o.entry and o.entry.get("verification", {}).get("rule")})
    lines += ["", *[f"- pass rule {r}" for r in rules], ""]
    return "\n".join(lines)
