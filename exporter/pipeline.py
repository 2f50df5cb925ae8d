"""Wires stages, runners and verification together. The CLI and Python users call this.

Every export goes: stage writes into a staging folder -> the staged artifact is verified
against the reference -> only a passing (or unverified on request) artifact is moved into
place, with its report beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from exporter.inputs import InputSet, random_inputs, user_inputs
from exporter.errors import BadInputError
from exporter.fsutil import Staging, sha256_of, size_of
from exporter.report import ArtifactResult, build_report, write_report
from exporter.spec import ModelSpec
from exporter.verify import Verdict, check_metadata, finish, tolerance_for, verify

ARTIFACT_SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "simplify": ".sim.onnx", "coreml": ".mlpackage"}


@dataclass
class VerifyOptions:
    enabled: bool = True
    batch_sizes: tuple[int, ...] = (1, 4)
    seed: int = 0
    images: Path | None = None
    extra_inputs: list[InputSet] = field(default_factory=list)
    precision: str = "fp32"
    max_rel_err: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None

    def tolerance(self):
        return tolerance_for(self.precision, self.max_rel_err, self.min_cosine, self.min_top1)

    def input_sets(self, spec: ModelSpec) -> list[InputSet]:
        sets = [random_inputs(spec, b, self.seed) for b in self.batch_sizes]
        if self.images is not None:
            sets.append(user_inputs(self.images, spec))
        return sets + list(self.extra_inputs)


Progress = Callable[[str], None]


def _noop(_: str) -> None:
    pass


def default_output(checkpoint: Path, kind: str) -> Path:
    """resnet18.pt -> resnet18.onnx beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ARTIFACT_SUFFIX[kind])


def rejected_name(output: Path) -> str:
    """resnet18.onnx -> resnet18.rejected.onnx (kept only with keep_failed)."""
    suffix = "".join(output.suffixes[-1:])
    return output.name[: len(output.name) - len(suffix)] + ".rejected" + suffix


def _run_stage(stage_fn, output: Path, verify_fn, keep_failed: bool, progress: Progress, kind: str) -> ArtifactResult:
    output = Path(output)
    if output.exists() and output.is_dir() and kind != "coreml":
        raise BadInputError(f"output {output} is a directory; give a file name with -o")
    with Staging(output.parent) as staging:
        started = time.perf_counter()
        progress(f"exporting {kind} -> {output}")
        produced = stage_fn(staging.path, output.name)
        seconds = time.perf_counter() - started
        staged = staging.path / produced.files[0]
        progress(f"verifying {output.name}")
        verdict = verify_fn(staged)
        if verdict.status == "fail" and not keep_failed:
            files, final = [], output
        else:
            rename = {}
            if verdict.status == "fail":
                rename = {name: name.replace(output.name, rejected_name(output), 1) for name in produced.files}
            files = staging.commit(produced.files, rename)
            final = files[-1]
        result = ArtifactResult(
            kind=kind,
            path=final,
            sha256=sha256_of(final) if files else None,
            bytes=sum(size_of(f) for f in files) if files else None,
            seconds=seconds,
            verification=verdict,
            details={**produced.details, "installed": bool(files) and verdict.status != "fail"},
            files=files,
        )
    return result


def _verifier(reference_runners: Callable[[], dict], spec: ModelSpec, opts: VerifyOptions, kind: str):
    def run(path: Path) -> Verdict:
        if not opts.enabled:
            return Verdict.skipped("--no-verify", opts.precision)
        from exporter.runners import open_runner

        runner = open_runner(path, kind)
        sets = opts.input_sets(spec)
        verdict = verify(runner, reference_runners(), sets, opts.tolerance(), opts.precision)
        return finish(verdict, [check_metadata(getattr(runner, "metadata", {}), spec), *_precision_checks(path, kind, opts, sets)])

    return run


def export_artifact(
    kind: str,
    loaded,
    output: Path,
    options: dict | None = None,
    verify_options: VerifyOptions | None = None,
    keep_failed: bool = False,
    progress: Progress = _noop,
    write: bool = True,
) -> ArtifactResult:
    """Export ``loaded`` (a LoadedModel) as ``kind`` ('onnx' | 'torchscript' | 'coreml') to ``output``, verified."""
    from exporter.runners.torch import TorchRunner

    stages = _stages()
    if kind not in stages:
        raise BadInputError(f"unknown artifact kind {kind!r}; choose one of {', '.join(stages)}")
    opts = verify_options or VerifyOptions()
    options = options or {}
    result = _run_stage(
        lambda staging, name: stages[kind](loaded, staging, name, **options),
        output,
        _verifier(lambda: {"pytorch": TorchRunner(loaded.module)}, loaded.spec, opts, kind),
        keep_failed,
        progress,
        kind,
    )
    if write and result.files:
        write_report(build_report([result], loaded), result.path)
    return result


def simplify_artifact(
    source: Path,
    output: Path | None = None,
    loaded=None,
    verify_options: VerifyOptions | None = None,
    keep_failed: bool = False,
    progress: Progress = _noop,
    write: bool = True,
) -> ArtifactResult:
    """onnxsim ``source``; verify against the source model and, when given, the checkpoint."""
    from exporter.runners.torch import TorchRunner
    from exporter.stages import simplify

    source, source_runner, spec, output = onnx_source(source, output, loaded, ".sim.onnx", "simplified")

    def references() -> dict:
        refs = {"source onnx": source_runner}
        if loaded is not None:
            refs["pytorch"] = TorchRunner(loaded.module)
        return refs

    opts = verify_options or VerifyOptions()
    result = _run_stage(
        lambda staging, name: simplify.export(source, staging, name),
        output,
        _verifier(references, spec, opts, "onnx"),
        keep_failed,
        progress,
        "simplify",
    )
    if write and result.files:
        write_report(build_report([result], loaded, spec), result.path)
    return result


def verify_existing(
    artifact: Path,
    loaded=None,
    reference: Path | None = None,
    verify_options: VerifyOptions | None = None,
    spec_overrides: dict | None = None,
    write: bool = True,
) -> ArtifactResult:
    """Re-check an artifact on disk against a checkpoint (or another artifact)."""
    from exporter.runners import detect_kind, open_runner
    from exporter.runners.torch import TorchRunner

    artifact = Path(artifact)
    if not artifact.exists():
        raise BadInputError(f"artifact {artifact} does not exist")
    if loaded is None and reference is None:
        raise BadInputError("verify needs a reference: pass --checkpoint MODEL.pt (or --reference OTHER_ARTIFACT)")
    kind = detect_kind(artifact)
    started = time.perf_counter()
    runner = open_runner(artifact, kind)
    references: dict = {}
    if loaded is not None:
        references["pytorch"] = TorchRunner(loaded.module)
        spec = loaded.spec
    if reference is not None:
        ref_runner = open_runner(Path(reference))
        references[f"reference {Path(reference).name}"] = ref_runner
        if loaded is None:
            spec = _spec_from_metadata(ref_runner.metadata or runner.metadata, Path(reference))
    if spec_overrides:
        spec = spec.with_overrides(**spec_overrides)
    opts = verify_options or VerifyOptions()
    declared = getattr(runner, "precision", None)  # e.g. a Core ML fp16 or weight-compressed package
    if declared and declared != "fp32" and opts.precision == "fp32":
        opts = replace(opts, precision=declared)  # judged by its own precision's rule, as when it was exported
    sets = opts.input_sets(spec)
    verdict = verify(runner, references, sets, opts.tolerance(), opts.precision)
    verdict = finish(verdict, [check_metadata(runner.metadata, spec), *_precision_checks(artifact, kind, opts, sets)])
    result = ArtifactResult(
        kind=kind,
        path=artifact,
        sha256=sha256_of(artifact),
        bytes=size_of(artifact),
        seconds=time.perf_counter() - started,
        verification=verdict,
    )
    if write:
        write_report(build_report([result], loaded, spec), artifact)
    return result


def _precision_checks(path: Path, kind: str, opts: VerifyOptions, sets: list[InputSet]) -> list:
    """Extra checks a precision needs beyond comparing outputs."""
    if kind == "onnx" and opts.precision == "fp16":
        from exporter.verify import fp16_range_check

        return [fp16_range_check(path, sets)]
    return []


def onnx_source(source: Path, output: Path | None, loaded, suffix: str, what: str):
    """For stages that start from an ONNX file: (source, its runner, the spec, the output path).

    The spec comes from the checkpoint when given, else from the ONNX metadata; the default
    output sits beside the source (resnet18.onnx -> resnet18<suffix>) and may never be the source.
    """
    from exporter.runners.onnxruntime import OnnxRuntimeRunner

    source = Path(source)
    if not source.is_file():
        raise BadInputError(f"ONNX model {source} does not exist")
    source_runner = OnnxRuntimeRunner(source)
    spec = loaded.spec if loaded else _spec_from_metadata(source_runner.metadata, source)
    output = Path(output) if output else source.with_name(source.name.removesuffix(".onnx") + suffix)
    if output.resolve() == source.resolve():
        raise BadInputError(f"the {what} model would overwrite its source; choose another name with -o")
    return source, source_runner, spec, output


def _spec_from_metadata(metadata: dict, path: Path) -> ModelSpec:
    if not metadata:
        raise BadInputError(f"{path} carries no cnnexport input spec; pass --checkpoint so the reference defines it")
    return ModelSpec.from_dict(metadata)


def _stages() -> dict:
    from exporter.stages import coreml as coreml_stage
    from exporter.stages import onnx as onnx_stage
    from exporter.stages import torchscript as torchscript_stage

    return {"onnx": onnx_stage.export, "torchscript": torchscript_stage.export, "coreml": coreml_stage.export}


def coreml_plan(batch: str | None, compress: str | None, batch_sizes: tuple[int, ...]):
    """(batch range, compression, verification batch sizes, tolerance set) of a Core ML export.

    Verification batch sizes are clipped into the package's batch range; a compressed
    (palettized / int8) program is judged by the int8 rule, others by their compute precision.
    """
    from exporter.stages.coreml import parse_batch, parse_compression

    low, high = parse_batch(batch)
    compression = parse_compression(compress)
    sizes = tuple(sorted({min(max(b, low), high) for b in batch_sizes}))
    return (low, high), compression, sizes, ("int8" if compression else None)


QUANTIZED_SUFFIX = {"int8-cpu": ".int8.onnx", "int8-tensorrt": ".int8-trt.onnx", "fp16": ".fp16.onnx"}


@dataclass
class QuantizeOptions:
    precision: str = "int8"  # int8 | fp16
    target: str = "cpu"  # int8 only: cpu | tensorrt
    calibration: str | Path | None = None  # folder, .npy/.npz, or 'digits'
    samples: int = 256
    holdout: int = 64  # distinct samples kept back for verification
    method: str = "minmax"
    per_channel: bool = True
    exclude: tuple[str, ...] = ()
    keep_io_types: bool = True
    fp16_overflow: str = "keep"
    trt_version: str = "10.8.0"
    evaluation: str | Path | None = None  # labelled data for top-1/top-5
    seed: int = 0

    @property
    def kind(self) -> str:
        return f"int8-{self.target}" if self.precision == "int8" else "fp16"


def quantize_artifact(
    source: Path,
    options: QuantizeOptions,
    output: Path | None = None,
    loaded=None,
    verify_options: VerifyOptions | None = None,
    keep_failed: bool = False,
    progress: Progress = _noop,
    write: bool = True,
) -> ArtifactResult:
    """INT8 or FP16 version of an ONNX model, verified against PyTorch (or the fp32 ONNX)."""
    from dataclasses import replace

    from exporter.inputs import calibration_split, open_source
    from exporter.runners.torch import TorchRunner
    from exporter.stages import quantize

    if options.precision not in ("int8", "fp16"):
        raise BadInputError("--precision must be int8 or fp16")
    source, source_runner, spec, output = onnx_source(source, output, loaded, QUANTIZED_SUFFIX[options.kind], "quantized")

    calib = held = None
    if options.calibration is not None:
        progress(f"reading calibration data {options.calibration}")
        calib, held = calibration_split(open_source(options.calibration, spec, options.seed), options.samples, options.holdout)
    elif options.precision == "int8":
        raise BadInputError("int8 quantization needs calibration data: --calib IMAGE_FOLDER | FILE.npy | digits")
    evaluation = None
    if options.evaluation is not None:  # checked now: a bad --eval must not surface after the artifact is installed
        evaluation = open_source(options.evaluation, spec, options.seed, split="test")
        if evaluation.labels is None:
            raise BadInputError(f"--eval {options.evaluation}: {evaluation.description} has no labels; use an ImageFolder "
                                "(one sub-folder per class), an .npz with 'labels', or 'digits'")

    opts = replace(verify_options or VerifyOptions(), precision=options.precision)
    extra = list(opts.extra_inputs)
    if held is not None:
        extra.append(InputSet(f"held-out ({len(held)}, not used for calibration)", held.take()))
    opts = replace(opts, extra_inputs=extra)
    if options.precision == "int8" and held is not None:
        # random noise says little about an int8 model calibrated on real data: judge it on held-out data
        base_sets = opts.input_sets

        def input_sets(spec_, base_sets=base_sets, n_random=len(opts.batch_sizes)):
            sets = base_sets(spec_)
            return [replace(s, judged=False) if i < n_random else s for i, s in enumerate(sets)]

        opts.input_sets = input_sets  # type: ignore[method-assign]

    def stage(staging: Path, name: str):
        if options.precision == "int8":
            return quantize.export_int8(
                source, staging, name, calib, options.target, options.method, options.per_channel,
                list(options.exclude), options.trt_version,
            )
        batches = list(calib.subset(0, 64, "overflow probe").batches(16)) if calib is not None else [random_inputs(spec, 8, options.seed).array]
        return quantize.export_fp16(source, staging, name, batches, options.keep_io_types, options.fp16_overflow)

    def references() -> dict:
        return {"pytorch": TorchRunner(loaded.module)} if loaded is not None else {"source onnx": source_runner}

    result = _run_stage(stage, output, _verifier(references, spec, opts, "onnx"), keep_failed, progress, options.kind)
    result.details["samples_heldout"] = len(held) if held is not None else 0
    if evaluation is not None and result.files:
        from exporter.eval import evaluate
        from exporter.runners import open_runner

        progress(f"evaluating on {options.evaluation}")
        reference = next(iter(references().values()))
        result.details["eval"] = evaluate({"reference": reference, result.path.name: open_runner(result.path)},
                                          evaluation)
    if write and result.files:
        write_report(build_report([result], loaded, spec), result.path)
    return result
