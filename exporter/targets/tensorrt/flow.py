"""`cnnexport tensorrt`: ONNX (-> Q/DQ or fp16 ONNX) -> TensorRT engine + sidecar, or a build kit.

source ONNX ──(int8)──> symmetric Q/DQ ONNX + .calib   (pipeline.quantize_artifact, verified)
            ──(fp16 on TensorRT 11)──> fp16 ONNX        (pipeline.quantize_artifact, verified)
then, where tensorrt and a GPU are here: build the engine, verify it at the profile's
min and max batch, install it with its sidecar (staged, atomic);
else with --emit-script DIR: write the build kit; the engine is reported
`skipped (tensorrt not installed)`, never pass;
else: BackendUnavailable (exit 3) saying what is missing and what to do.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from exporter.errors import BadInputError
from exporter.inputs import InputSet
from exporter.pipeline import Progress, noop, onnx_source, run_stage, verifier
from exporter.report import ArtifactResult, build_report, write_report
from exporter.targets.tensorrt import machine
from exporter.targets.tensorrt import plan as trt_plan
from exporter.targets.tensorrt.build import build_engine
from exporter.targets.tensorrt.sidecar import sidecar_partial
from exporter.targets.tensorrt.version import DEFAULT_VERSION, version_text, version_tuple
from exporter.verify import Verdict


def build_options(options, calibration=None) -> trt_plan.BuildOptions:
    """Parse and check every option of exporter.options.TensorRTOptions (BadInputError, exit 2) before any work."""
    if options.precision not in trt_plan.PRECISIONS:
        raise BadInputError(f"--precision must be one of {', '.join(trt_plan.PRECISIONS)}")
    if options.trt_version is not None:
        version_tuple(options.trt_version)
    return trt_plan.BuildOptions(
        profile=trt_plan.parse_batch_profile(options.batch),
        workspace=trt_plan.parse_size(options.workspace) if options.workspace else None,
        optimization_level=options.optimization_level,
        hardware_compatibility=options.hardware_compatibility,
        version_compatible=options.version_compatible,
        timing_cache=Path(options.timing_cache) if options.timing_cache else None,
    )


def check_options(options) -> None:
    """The stage table's preflight: every option parses, and without --emit-script TensorRT and a GPU are here."""
    build_options(options)
    if options.emit_script is None:
        machine.require_tensorrt()  # no tensorrt or no GPU: exit 3 before any work, saying what to do


def kit_outputs(options) -> list[tuple[Path, bool]]:
    """The tensorrt row's extra output: the build kit folder --emit-script names (replaced as a whole)."""
    return [(Path(options.emit_script), True)] if options.emit_script else []


def options_from_recipe(options, section: dict, out_dir: Path, base: str):
    """A recipe's `emit_script: true` means: where TensorRT is absent, write the build kit beside the artifacts."""
    installed, _ = machine.tensorrt_status()
    kit = Path(out_dir) / f"{base}-tensorrt-kit" if installed is None and section.get("emit_script") else None
    return options.model_copy(update={"emit_script": kit})


def onnx_input(path: Path) -> tuple[str, list]:
    """(name, dims) of the model's image input, read from the model (never assumed to be 'input')."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BadInputError(f"{path} has {len(inputs)} inputs; cnnexport builds engines for single-input image models")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def build_artifacts(req) -> list[ArtifactResult]:
    """The tensorrt row's flow: the int8 / fp16 ONNX it needs first (exporter.build.run), then the engine or its kit."""
    from exporter.build import run

    return tensorrt_artifacts(req, run)


def tensorrt_artifacts(req, build_one) -> list[ArtifactResult]:
    """The engine for ``req.source`` (an ONNX model), plus the Q/DQ or fp16 models it needed, each verified.

    ``req`` is an exporter.build.BuildRequest whose options are exporter.options.TensorRTOptions;
    ``build_one(request) -> [ArtifactResult]`` builds the int8 / fp16 ONNX the engine is made from
    (exporter.build.run, passed in so that the build layer imports this module and not the reverse).
    """
    from exporter import kinds
    from exporter.fsutil import sha256_of
    from exporter.targets.onnx.row import Fp16Options, Int8Options

    options, loaded, progress = req.options, req.loaded, req.progress
    build_opts = build_options(options)
    profile = build_opts.profile
    source, source_runner, spec, output = onnx_source(req.source, req.output, loaded, ".engine", "engine")
    input_name, chw = _checked_input(source, spec, profile)
    target_version, why_not = _target_version(options)
    plan = trt_plan.decide_plan(target_version, options.precision, options.int8_mode)
    progress(
        f"TensorRT {target_version}: {plan.precision}{' ' + plan.int8_mode if plan.int8_mode else ''}, "
        f"{'strongly typed' if plan.strongly_typed else 'weakly typed'}, profile {profile}"
    )

    results: list[ArtifactResult] = []
    build_onnx, calib_path, held = source, None, None
    if plan.onnx == "qdq" and made_for_tensorrt(source):
        # already the Q/DQ model TensorRT builds (a recipe's own int8_tensorrt stage, verified there, with its
        # per_channel / exclude / equalize): the engine is built from it as it is, not quantized a second time
        progress(f"building from {source.name} as it is: a Q/DQ model quantized for TensorRT")
        calib = source.with_name(source.name.removesuffix(".onnx") + ".calib")
        calib_path = calib if calib.is_file() else None
        held = _held_out(req.calibration, req.verify.seed, spec, profile)
    elif plan.precision == "int8" or plan.onnx == "fp16":
        q_opts: Int8Options | Fp16Options
        if plan.precision == "int8":
            row, q_opts = kinds.get("int8_tensorrt"), Int8Options(method=options.method, trt_version=version_text(target_version))
        else:
            row, q_opts = kinds.get("fp16"), Fp16Options()
        quantized = build_one(replace(req, kind=row, options=q_opts, source=source, output=None, evaluation=None))[-1]
        results.append(quantized)
        if quantized.verification.status == "fail" or not quantized.files:
            return results  # no engine from a model that failed its own check
        if plan.onnx in ("qdq", "fp16"):
            build_onnx = quantized.path
        calib_path = next((f for f in quantized.files if f.suffix == ".calib"), None)
        if plan.precision == "int8":
            held = _held_out(req.calibration, req.verify.seed, spec, profile)

    if output.suffix.lower() not in (".engine", ".plan"):
        raise BadInputError(f"-o {output.name}: a TensorRT engine file ends in .engine or .plan")
    lint = check_for_tensorrt(build_onnx, target_version, progress)
    sidecar = sidecar_partial(plan, build_opts, input_name, chw, build_onnx, sha256_of(build_onnx), spec.to_dict())
    sidecar.update(reference_onnx=source.name, reference_onnx_sha256=sha256_of(source), plan_notes=list(plan.notes))

    if options.emit_script is not None:
        kit = _emit(
            options, output, source, build_onnx, calib_path, plan, build_opts, input_name, chw, sidecar, loaded, why_not, progress
        )
        kit.details["tensorrt_lint"] = lint
        results.append(kit)
        if req.write:
            write_report(build_report(results, loaded, spec), Path(options.emit_script) / output.name)
        return results

    result = _engine(req, plan, build_opts, build_onnx, calib_path, held, source_runner, spec, output, input_name, chw, sidecar)
    result.details["tensorrt_lint"] = lint
    results.append(result)
    if req.write and result.files:
        write_report(build_report([result], loaded, spec), result.path)
    return results


def _checked_input(source: Path, spec, profile) -> tuple[str, tuple]:
    """(input name, (C, H, W)) of the source model, its dims checked against the spec and the batch profile."""
    input_name, dims = onnx_input(source)
    chw = tuple(spec.input_shape)
    fixed = [d for d in dims[1:] if isinstance(d, int) and d > 0]
    if len(dims) != 4 or (len(fixed) == 3 and tuple(fixed) != chw):
        raise BadInputError(f"{source.name}'s input {input_name} has dims {dims}; expected (batch, {', '.join(map(str, chw))})")
    if isinstance(dims[0], int) and dims[0] > 0 and (profile.min, profile.max) != (dims[0], dims[0]):
        raise BadInputError(
            f"{source.name} has a fixed batch of {dims[0]}; export it with a dynamic batch axis to build the profile {profile}"
        )
    return input_name, chw


def _target_version(options) -> tuple[str, str | None]:
    """(the TensorRT version to build for, why it cannot be built here or None): the installed one with a GPU, else
    --trt-version for a build kit; neither is BackendUnavailable (exit 3) saying what to do."""
    installed, why_not = machine.tensorrt_status()
    if installed is not None:
        gpu_ok, gpu_why = machine.cuda_status()
        if not gpu_ok:
            installed, why_not = None, gpu_why
    emit = options.emit_script is not None
    if installed is None and not emit:
        machine.require_tensorrt()  # raises BackendUnavailable with what to do
    target_version = (options.trt_version or DEFAULT_VERSION) if emit else installed
    assert target_version is not None  # installed, or require_tensorrt raised
    return target_version, why_not


def _engine(
    req, plan, build_opts, build_onnx: Path, calib_path, held, source_runner, spec, output: Path, input_name: str, chw, sidecar
) -> ArtifactResult:
    """The engine built and verified at the profile's min and max batch (int8 on held-out data), installed with its sidecar."""
    loaded, profile = req.loaded, build_opts.profile
    opts = replace(req.verify, batch_sizes=(profile.min, profile.max), precision=plan.precision)
    if held is not None:
        # int8 is judged on held-out real data; on noise it only has to run, with the right shape
        opts = replace(opts, extra_inputs=[*opts.extra_inputs, held], judge_random=False)

    def references() -> dict:
        from exporter.runners.torch import TorchRunner

        return {"pytorch": TorchRunner(loaded.module)} if loaded is not None else {"source onnx": source_runner}

    calib_batches = ()

    def build(staging: Path, name: str):
        made = build_engine(build_onnx, staging, name, plan, build_opts, input_name, chw, sidecar, calib_path, calib_batches)
        if req.options.consumer_files:  # the engine's JSON sidecar is always there; Triton's labels on request
            from exporter.release.consumers import write_consumer_files

            made.files.extend(write_consumer_files(spec, staging, name, with_spec=False))
        return made

    return run_stage(
        build,
        output,
        verifier(references, spec, opts, "tensorrt"),
        req.keep_failed,
        req.progress,
        "tensorrt",
    )


def check_for_tensorrt(model: Path, trt_version: str, progress: Progress = noop) -> dict:
    """The TensorRT lint of the model an engine is built from; a violation is bad input (exit 2), no kit."""
    from exporter.targets.tensorrt.lint import describe_violation, lint

    result = lint(model, trt_version)
    progress(
        f"TensorRT lint of {Path(model).name}: {result['status']}"
        + (f" ({len(result['unknown'])} finding(s) the support table cannot judge)" if result["unknown"] else "")
    )
    if result["status"] == "fail":
        raise BadInputError(f"TensorRT's ONNX parser would refuse {Path(model).name}: {describe_violation(result)}")
    return result


def made_for_tensorrt(path: Path) -> bool:
    """Whether an ONNX model is a Q/DQ model cnnexport quantized for TensorRT (its int8_tensorrt row's metadata)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("cnnexport.int8_target") == "tensorrt"


def upstream_stages(options) -> tuple[str, ...]:
    """The recipe stages an engine is built from: the recipe's own int8_tensorrt stage first for a Q/DQ int8 engine."""
    from exporter.targets.onnx.row import ONNX_INPUTS

    return ("int8_tensorrt", *ONNX_INPUTS) if options.precision == "int8" and options.int8_mode == "qdq" else ONNX_INPUTS


def _held_out(data, seed: int, spec, profile) -> InputSet | None:
    """The calibration split's held-out samples (never used to calibrate), at most the profile's max batch."""
    from exporter.inputs import calibration_split, open_source

    _, held = calibration_split(open_source(data.data, spec, seed), data.samples, data.holdout)
    if held is None:
        return None
    array = held.take()[: profile.max]
    if len(array) < profile.min:
        return None
    return InputSet(f"held-out ({len(array)}, not used for calibration)", array)


def _emit(
    options, output, source, build_onnx, calib_path, plan, build_opts, input_name, chw, sidecar, loaded, why_not, progress
) -> ArtifactResult:
    from exporter.targets.tensorrt.kit import KitRequest, verify_command, write_kit

    started = time.perf_counter()
    kit_dir = Path(options.emit_script)
    progress(f"writing the TensorRT build kit -> {kit_dir}")
    req = KitRequest(
        kit_dir=kit_dir,
        engine_name=output.name,
        reference_onnx=source,
        build_onnx=build_onnx,
        plan=plan,
        options=build_opts,
        input_name=input_name,
        chw=chw,
        sidecar=sidecar,
        calib=calib_path,
        timing_cache=str(build_opts.timing_cache) if build_opts.timing_cache else "timing.cache",
        checkpoint=getattr(loaded, "path", None),
        labels=tuple(sidecar["spec"].get("labels") or ()) if options.consumer_files else (),
    )
    files = write_kit(req)
    reason = why_not or "--emit-script: build.sh builds the engine"
    return ArtifactResult(
        kind="tensorrt",
        path=kit_dir / output.name,
        sha256=None,
        bytes=None,
        seconds=time.perf_counter() - started,
        verification=Verdict.skipped(reason, plan.precision),
        details={
            "installed": False,
            "kit": str(kit_dir),
            "kit_files": [f.name for f in files],
            "build": f"bash {kit_dir / 'build.sh'}",
            "verify": verify_command(req),
            "next_steps": [
                f"wrote the build kit {kit_dir}: on the NVIDIA machine run `bash {kit_dir}/build.sh`, then "
                f"`{verify_command(req)}`"
            ],
            "input": input_name,
            "plan": plan.to_dict(),
            **build_opts.to_dict(),
        },
        files=files,
    )


def lint_kit(kit_dir: Path, progress: Progress = noop) -> dict | None:
    """The TensorRT lint of the model a build kit would build (its ``*.build.json`` names it); None: not a kit."""
    import json

    from exporter.targets.tensorrt.kit import KIT_MARKER

    kit_dir = Path(kit_dir)
    if not (kit_dir / KIT_MARKER).is_file():
        return None
    sidecars = sorted(kit_dir.glob("*.build.json"))
    if not sidecars:
        raise BadInputError(f"{kit_dir} has no *.build.json: the kit is incomplete; write it again with --emit-script")
    try:
        sidecar = json.loads(sidecars[0].read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{sidecars[0]} cannot be read ({exc})") from None
    model = kit_dir / str(sidecar.get("source_onnx", ""))
    if not model.is_file():
        raise BadInputError(f"{kit_dir} does not hold the model its build.json names ({sidecar.get('source_onnx')})")
    lint = check_for_tensorrt(model, DEFAULT_VERSION, progress)
    return {
        "kit": str(kit_dir),
        "model": model.name,
        "tensorrt_lint": lint,
        "summary": f"TensorRT lint of {model.name}: {lint['status']}; the engine itself is verified on the NVIDIA "
        "machine (verify.sh)",
    }
