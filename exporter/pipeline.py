"""Wires stages, runners and verification together. The CLI and Python users call this.

Every export goes: stage writes into a staging folder -> the staged artifact is verified
against the reference -> only a passing (or unverified on request) artifact is moved into
place, with its report beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel

from exporter.errors import BadInputError
from exporter.fsutil import Staging, sha256_of, size_of
from exporter.inputs import InputSet, random_inputs, user_inputs
from exporter.report import ArtifactResult, build_report, write_report
from exporter.spec import ModelSpec
from exporter.verify import Verdict, check_metadata, finish, tolerance_for, verify


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
    conf: float | None = None  # detect outputs' decoding (exporter/options.py DetectOptions)
    iou: float | None = None
    # The verification plan: seeded random sets at every batch size, the user's images, then any
    # extra sets (held-out calibration data, the demo's held-out digits). judge_random=False keeps
    # the random sets as run/shape/finite checks only: noise says little about an int8 model
    # calibrated on real data, which is judged on its held-out samples instead.
    judge_random: bool = True

    def tolerance(self):
        return tolerance_for(self.precision, self.max_rel_err, self.min_cosine, self.min_top1, conf=self.conf, iou=self.iou)

    def input_sets(self, spec: ModelSpec) -> list[InputSet]:
        sets = [replace(random_inputs(spec, b, self.seed), judged=self.judge_random) for b in self.batch_sizes]
        if self.images is not None:
            sets.append(user_inputs(self.images, spec))
        return sets + list(self.extra_inputs)


Progress = Callable[[str], None]


def noop(_: str) -> None:
    pass


def default_output(checkpoint: Path, kind: str, options=None) -> Path:
    """resnet18.pt -> resnet18.onnx beside the checkpoint (resnet18.int8.pte where the options' precision names the file)."""
    from exporter.kinds import get

    checkpoint, row = Path(checkpoint), get(kind)
    return checkpoint.with_name(checkpoint.stem + (row.suffix if options is None else row.suffix_of(options)))


def rejected_name(output: Path) -> str:
    """resnet18.onnx -> resnet18.rejected.onnx (kept only with keep_failed)."""
    suffix = "".join(output.suffixes[-1:])
    return output.name[: len(output.name) - len(suffix)] + ".rejected" + suffix


def _rejected(name: str, output: Path) -> str:
    """A staged file's name once rejected: its companions follow the artifact (x.bin with x.xml, x.onnx.data with x.onnx)."""
    stem, rejected = output.name[: -len(output.suffix)] if output.suffix else output.name, rejected_name(output)
    rejected_stem = rejected[: -len(output.suffix)] if output.suffix else rejected
    return rejected_stem + name[len(stem) :] if name.startswith(stem) else name


def run_stage(
    stage_fn, output: Path, verify_fn, keep_failed: bool, progress: Progress, kind: str, folder: bool = False
) -> ArtifactResult:
    """Stage -> verify the staged files -> install them (or not); ``folder``: the artifact is a directory."""
    output = Path(output)
    if output.exists() and output.is_dir() and not folder:
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
                rename = {name: _rejected(name, output) for name in produced.files}
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


def verifier(reference_runners: Callable[[], dict], spec: ModelSpec, opts: VerifyOptions, kind: str):
    def run(path: Path) -> Verdict:
        if not opts.enabled:
            return Verdict.skipped("--no-verify", opts.precision)
        from exporter.runners import open_runner

        runner = open_runner(path, kind)
        sets = opts.input_sets(spec)
        references = reference_runners()
        verdict = verify(runner, references, sets, opts.tolerance(), opts.precision, spec=spec)
        verdict = finish(verdict, [check_metadata(runner.metadata, spec), *_precision_checks(path, kind, opts, sets)])
        if verdict.status == "fail" and _layerwise(kind) and "pytorch" in references:
            verdict.first_divergent = _first_divergent(path, references["pytorch"].module, verdict, sets, opts)
        return verdict

    return run


def _layerwise(kind: str) -> bool:
    """Whether the Format called ``kind`` can be compared layer by layer (the first divergent layer)."""
    from exporter.kinds import formats

    return any(f.name == kind and f.layers for f in formats())


def _first_divergent(path: Path, module, verdict: Verdict, sets: list[InputSet], opts: VerifyOptions) -> dict | None:
    """One extra pass over the inputs that failed: the first layer past the rule, or None if it cannot be told."""
    from exporter.rescue.debug import explain

    failed = next((c.inputs for c in verdict.checks if c.status == "fail" and c.judged and c.reference == "pytorch"), None)
    batch = next((s.array for s in sets if s.name == failed), None)
    if batch is None:
        return None
    try:
        return explain(path, module, batch[:64], opts.precision, opts.tolerance())["first_divergent"]
    except Exception as exc:  # noqa: BLE001 - a diagnosis must never hide the verdict it explains
        return {"unavailable": f"{type(exc).__name__}: {exc}"[:300]}


def export_artifact(
    kind: str,
    loaded,
    output: Path,
    options: dict | BaseModel | None = None,
    verify_options: VerifyOptions | None = None,
    keep_failed: bool = False,
    progress: Progress = noop,
    write: bool = True,
) -> ArtifactResult:
    """Export ``loaded`` (a LoadedModel) as a kind made from the checkpoint (onnx, torchscript, ...) to ``output``, verified.

    ``options``: the row's options model, or a dict of its fields (its target folder's row.py).
    """
    from exporter import kinds
    from exporter.runners.torch import TorchRunner
    from exporter.stages import StageRequest

    row = kinds.get(kind)
    if row.source != "checkpoint":
        raise BadInputError(f"{kind} is made from an ONNX model, not from a checkpoint; use exporter.build.build")
    stage = row.stage_function()
    opts = verify_options or VerifyOptions()
    parsed = options if isinstance(options, BaseModel) else row.parse(options or {})
    result = run_stage(
        lambda staging, name: stage(StageRequest(parsed, staging, name, loaded.spec, loaded=loaded, seed=opts.seed, row=row)),
        output,
        verifier(lambda: {"pytorch": TorchRunner(loaded.module)}, loaded.spec, opts, row.runner),
        keep_failed,
        progress,
        row.kind,
        row.folder,
    )
    if write and result.files:
        write_report(build_report([result], loaded), result.path)
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
    declared = runner.precision  # e.g. a Core ML fp16 or weight-compressed package
    if declared and declared != "fp32" and opts.precision == "fp32":
        opts = replace(opts, precision=declared)  # judged by its own precision's rule, as when it was exported
    sets = opts.input_sets(spec)
    verdict = verify(runner, references, sets, opts.tolerance(), opts.precision, spec=spec)
    verdict = finish(verdict, [check_metadata(runner.metadata, spec), *_precision_checks(artifact, kind, opts, sets)])
    if verdict.status == "fail" and _layerwise(kind) and loaded is not None:
        verdict.first_divergent = _first_divergent(artifact, loaded.module, verdict, sets, opts)
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
    """Extra checks the artifact's Format makes beyond comparing outputs (ONNX fp16: every fp16 tensor's range)."""
    from exporter.kinds import formats, resolve

    fmt = next((f for f in formats() if f.name == kind), None)
    return list(resolve(fmt.checks)(path, opts.precision, sets)) if fmt is not None and fmt.checks else []


def onnx_source(source: Path, output: Path | None, loaded, suffix: str, what: str):
    """For stages that start from an ONNX file: (source, its runner, the spec, the output path).

    The spec comes from the checkpoint when given, else from the ONNX metadata; the default
    output sits beside the source (resnet18.onnx -> resnet18<suffix>) and may never be the source.
    """
    from exporter.targets.onnx.runner import OnnxRuntimeRunner

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
