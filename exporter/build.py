"""One entry point for every artifact kind: what each verb, each recipe stage and Python callers run.

    build("int8", "resnet18.pt", {"method": "entropy"}, calibration={"data": "images/"})

reads the kind's row (exporter/kinds.py), checks its options before any work, exports the
ONNX first when an ONNX-based kind is given a checkpoint, then runs the kind's flow below.
Each flow stages, verifies and installs through exporter/pipeline.py and returns every
artifact it made (the ONNX it had to export first, the Q/DQ model an engine was built from, …).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from exporter.errors import BadInputError, CnnexportError
from exporter.kinds import ArtifactKind, resolve
from exporter.options import DataOptions
from exporter.pipeline import (
    Progress,
    VerifyOptions,
    default_output,
    export_artifact,
    noop,
    onnx_source,
    run_stage,
    verifier,
)
from exporter.report import ArtifactResult, install_report
from exporter.runners import artifact_spec


@dataclass
class BuildRequest:
    kind: ArtifactKind
    options: BaseModel  # the kind's options model
    source: Path  # a checkpoint, or the ONNX model an ONNX-based kind reads
    output: Path | None = None  # default: beside the source, with the kind's suffix
    loaded: Any = None  # the checkpoint (LoadedModel): the model itself, or the reference of an ONNX-based kind
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    calibration: DataOptions = field(default_factory=DataOptions)
    evaluation: str | None = None  # labelled data for top-1/top-5 of a quantized model
    keep_failed: bool = False
    progress: Progress = noop
    write: bool = True  # write NAME.report.json beside each artifact
    reads: tuple = ()  # other user files the request reads, as (role, path): the --checkpoint reference, --labels, ...


def request(kind: str | ArtifactKind, source, options: BaseModel | dict | None = None, **fields) -> BuildRequest:
    """A BuildRequest with the options parsed and checked (BadInputError, exit 2, before any work)."""
    from exporter import kinds

    row = kinds.get(kind) if isinstance(kind, str) else kind
    parsed = options if isinstance(options, BaseModel) else row.parse(options)
    calibration = fields.pop("calibration", None)
    if not isinstance(calibration, DataOptions):
        calibration = DataOptions.model_validate(calibration or {})
    req = BuildRequest(kind=row, options=parsed, source=Path(source), calibration=calibration, **fields)
    preflight(req)
    return req


def build(kind: str | ArtifactKind, source, options: BaseModel | dict | None = None, **fields) -> list[ArtifactResult]:
    """Make, verify and install one artifact kind from ``source``; returns every artifact made, last = the kind's."""
    return run(request(kind, source, options, **fields))


def run(req: BuildRequest) -> list[ArtifactResult]:
    from exporter.fsutil import folder_lock
    from exporter.guard import protecting

    folders = {path.parent for path, _ in planned_outputs(req)}
    with protecting(inputs_of(req)), folder_lock(folders, req.progress):
        return _run(req)


def _run(req: BuildRequest) -> list[ArtifactResult]:
    results: list[ArtifactResult] = []
    from_checkpoint = req.kind.source == "checkpoint" or req.source.suffix.lower() != ".onnx"
    if req.loaded is None and from_checkpoint:
        from exporter.loading.checkpoint import load_checkpoint

        req.loaded = load_checkpoint(req.source, progress=req.progress)
    spec = req.loaded.spec if req.loaded is not None else _stored_spec_or_none(req.source)
    if spec is not None:
        check_data(req, spec)  # every data source opened and counted before the first stage writes anything
    if req.kind.source != "checkpoint" and from_checkpoint:
        # a checkpoint for a kind made from another's artifact (the ONNX): make (and verify) that one first, beside it
        exported = export_artifact(
            req.kind.source,
            req.loaded,
            default_output(req.source, req.kind.source),
            {},
            replace(req.verify, precision="fp32"),
            req.keep_failed,
            req.progress,
            req.write,
        )
        results.append(exported)
        if exported.verification.status == "fail" or not exported.files:
            return results  # nothing is built from a model that failed its own check
        req = replace(req, source=exported.path)
    return results + req.kind.builder()(req)


def preflight(req: BuildRequest) -> None:
    """Refuse bad options and missing data before any file is read or written."""
    row = req.kind
    if row.calibrates(req.options) and req.calibration.data is None:
        what = "int8 quantization" if row.verb == "quantize" else f"{row.verb} --precision int8"
        raise BadInputError(f"{what} needs calibration data: --calib IMAGE_FOLDER | FILE.npy | digits")
    row.check_options(req.options)
    from exporter.guard import refuse_clobbering

    refuse_clobbering(planned_outputs(req), inputs_of(req))


CLI_DATA_FLAGS = {"calibration": "--calib", "evaluation": "--eval", "images": "--images"}


def check_data(req: BuildRequest, spec, flags: dict | None = None) -> None:
    """Open and count the calibration, evaluation and --images sources (BadInputError names the flag)."""
    from exporter.inputs import check_source

    flags = flags or CLI_DATA_FLAGS
    row = req.kind
    if req.calibration.data is not None and (row.calibrates(req.options) or row.reads_data):
        check_source(req.calibration.data, spec, flags["calibration"])
    if req.evaluation is not None:
        check_source(req.evaluation, spec, flags["evaluation"], labels=True, split="test")
    if req.verify.enabled and req.verify.images is not None:
        check_source(req.verify.images, spec, flags["images"], verification=True)


def _stored_spec_or_none(source: Path):
    """The spec an ONNX source carries, or None (the flow then says what is missing)."""
    try:
        return artifact_spec(source) if Path(source).is_file() else None
    except CnnexportError:
        return None


def inputs_of(req: BuildRequest) -> list[tuple[str, Any]]:
    """Every user file the request reads, with the role a refusal names it by."""
    source_role = "the ONNX model" if req.source.suffix.lower() == ".onnx" else "the checkpoint"
    loaded = getattr(req.loaded, "path", None)
    return [
        (source_role, req.source),
        ("the checkpoint", loaded),
        ("the --calib data", req.calibration.data),
        ("the --eval data", req.evaluation),
        ("the --images data", req.verify.images),
        *req.reads,
    ]


def planned_outputs(req: BuildRequest) -> list[tuple[Path, bool]]:
    """Every path the request may write, as (path, is a folder that gets replaced), before any work."""
    row, source = req.kind, Path(req.source)
    planned: list[tuple[Path, bool]] = []
    if row.source == "onnx" and source.suffix.lower() != ".onnx":
        source = default_output(source, "onnx")  # the ONNX exported first, beside the checkpoint
        planned.append((source, False))
    if req.output is not None:
        primary = Path(req.output)
    elif row.source == "onnx":
        primary = source.with_name(source.name.removesuffix(".onnx") + row.suffix_of(req.options))
    else:
        primary = default_output(source, row.name, req.options)
    planned += [(primary, row.folder), *row.extra_outputs_of(req.options)]
    return [item for path, folder in planned for item in [(path, folder), *((c, False) for c in companions(path))]]


def companions(path: Path) -> list[Path]:
    """The files written beside an artifact: its report, its rejected copy, and what its Format writes beside it
    (external weights, a sidecar: exporter.kinds.Format companion_suffixes / companion_swaps)."""
    from exporter import kinds
    from exporter.pipeline import rejected_name

    path = Path(path)
    rejected = path.with_name(rejected_name(path))
    near = [Path(str(path) + ".report.json"), rejected, Path(str(rejected) + ".report.json")]
    fmt = next((f for f in kinds.formats() if path.suffix.lower() in f.suffixes), None)
    if fmt is not None:
        near += [Path(str(path) + suffix) for suffix in fmt.companion_suffixes]
        near += [p.with_suffix(suffix) for suffix in fmt.companion_swaps for p in (path, rejected)]
    return near


# ----------------------------------------------------------------- the flows of the table's rows


def from_checkpoint(req: BuildRequest) -> list[ArtifactResult]:
    """The flow of a row made from the checkpoint (TorchScript, ONNX, Core ML, ExecuTorch, LiteRT): staged, verified, installed.

    The row's ``verify_batches`` hook gives the batch sizes the artifact accepts (a Core ML
    program's --batch range clips them). A row that ``reads_data`` (an int8 ExecuTorch program)
    gets the calibration split and is judged on its held-out part, as ``from_onnx`` does.
    """
    from exporter.runners.torch import TorchRunner
    from exporter.stages import StageRequest

    loaded = req.loaded
    if loaded is None:
        from exporter.loading.checkpoint import load_checkpoint

        loaded = load_checkpoint(req.source, progress=req.progress)
    row = req.kind
    output = req.output or default_output(req.source, row.name, req.options)
    verify = replace(req.verify, precision=row.precision(req.options))
    if row.verify_batches:
        verify = replace(verify, batch_sizes=resolve(row.verify_batches)(req.options, verify.batch_sizes))
    if not row.reads_data:
        return [export_artifact(row.name, loaded, output, req.options, verify, req.keep_failed, req.progress, req.write)]
    data = _data_sets(req, loaded.spec, verify)
    stage = row.stage_function()
    result = run_stage(
        lambda staging, name: stage(
            StageRequest(
                req.options, staging, name, loaded.spec, loaded=loaded, calibration=data.calib, seed=verify.seed, row=row
            )
        ),
        output,
        verifier(lambda: {"pytorch": TorchRunner(loaded.module)}, loaded.spec, data.verify, row.runner),
        req.keep_failed,
        req.progress,
        row.kind,
        row.folder,
    )
    _finish_data_stage(req, result, data, lambda: TorchRunner(loaded.module))
    install_report(result, loaded, loaded.spec, req.write)
    return [result]


@dataclass
class DataSets:
    """What a data-reading stage is given and judged on: calibration samples, the held-out set, --eval."""

    calib: Any
    held: Any
    verify: VerifyOptions
    evaluation: Any


def _data_sets(req: BuildRequest, spec, verify: VerifyOptions) -> DataSets:
    """The seeded calibration split (the held-out part becomes a verification set) and the --eval source.

    The held-out part is never calibrated on; an int8 artifact is judged on it (random noise then
    only has to run with the right shape). --eval is opened now: a bad one must not surface after
    the artifact is installed.
    """
    from exporter.inputs import InputSet, calibration_split, open_source

    data, seed = req.calibration, req.verify.seed
    calib = held = None
    if data.data is not None and req.kind.reads_data:
        req.progress(f"reading calibration data {data.data}")
        calib, held = calibration_split(open_source(data.data, spec, seed), data.samples, data.holdout)
    evaluation = None
    if req.evaluation is not None:
        evaluation = open_source(req.evaluation, spec, seed, split="test")
        if evaluation.labels is None:
            raise BadInputError(
                f"--eval {req.evaluation}: {evaluation.description} has no labels; use an ImageFolder "
                "(one sub-folder per class), an .npz with 'labels', or 'digits'"
            )
    if held is not None:
        extra = InputSet(f"held-out ({len(held)}, not used for calibration)", held.take())
        verify = replace(
            verify, extra_inputs=[*verify.extra_inputs, extra], judge_random=verify.judge_random and verify.precision != "int8"
        )
    return DataSets(calib, held, verify, evaluation)


def _finish_data_stage(req: BuildRequest, result: ArtifactResult, data: DataSets, reference: Callable) -> None:
    """The held-out count in a data-reading row's details and, with --eval, top-1/top-5 beside the reference's."""
    if req.kind.reads_data:
        result.details["samples_heldout"] = len(data.held) if data.held is not None else 0
    if data.evaluation is not None and result.files:
        from exporter.measure.eval import evaluate
        from exporter.runners import open_runner

        req.progress(f"evaluating on {req.evaluation}")
        result.details["eval"] = evaluate(
            {"reference": reference(), result.path.name: open_runner(result.path, req.kind.runner)}, data.evaluation
        )


def from_onnx(req: BuildRequest) -> list[ArtifactResult]:
    """The flow of a row made from a verified ONNX model, with or without calibration (simplify, int8, fp16, OpenVINO).

    Calibration samples come from the first part of the seeded split; the held-out part is one
    more verification set (``_data_sets``). With ``req.evaluation`` the installed artifact's
    top-1/top-5 is measured against the reference. The reference is the checkpoint when given,
    else the source ONNX (and both for a row that ``checks_source``).
    """
    from exporter.runners.torch import TorchRunner
    from exporter.stages import StageRequest

    row = req.kind
    source, source_runner, spec, output = onnx_source(req.source, req.output, req.loaded, row.suffix_of(req.options), row.kind)
    seed = req.verify.seed
    data = _data_sets(req, spec, replace(req.verify, precision=row.precision(req.options)))

    def references() -> dict:
        refs = {"source onnx": source_runner} if req.loaded is None or row.checks_source else {}
        if req.loaded is not None:
            refs["pytorch"] = TorchRunner(req.loaded.module)
        return refs

    stage = row.stage_function()
    result = run_stage(
        lambda staging, name: stage(
            StageRequest(
                req.options, staging, name, spec, loaded=req.loaded, source=source, calibration=data.calib, seed=seed, row=row
            )
        ),
        output,
        verifier(references, spec, data.verify, row.runner),
        req.keep_failed,
        req.progress,
        row.kind,
        row.folder,
    )
    _finish_data_stage(req, result, data, lambda: references().get("pytorch") or source_runner)
    install_report(result, req.loaded, spec, req.write)
    return [result]


# ----------------------------------------------------------------- the reference


def _check_shape_fits(artifact: Path, asked, stored) -> None:
    """--input-shape may override the spec an ONNX carries only where its graph takes that size (one sentence, exit 2)."""
    if asked is None or tuple(asked) == tuple(stored) or Path(artifact).suffix.lower() != ".onnx":
        return
    import onnx

    dims = onnx.load(str(artifact), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    if any(f is not None and f != a for f, a in zip(fixed, asked)):
        shape = "x".join(str(f) if f is not None else "?" for f in fixed)
        raise BadInputError(
            f"--input-shape {','.join(map(str, asked))} does not fit {Path(artifact).name}, whose graph takes {shape} "
            f"(the spec it carries: {','.join(map(str, stored))}); drop the flag, or export the checkpoint again at that size"
        )


def load_reference(
    checkpoint: Path,
    artifact: Path | None = None,
    *,
    arch=None,
    arch_kwargs=None,
    trust_pickle=False,
    overrides: dict | None = None,
    weights: str = "model",
    progress: Progress = noop,
    outputs: tuple[str, ...] | None = None,
    tasks: dict | None = None,
):
    """The checkpoint, loaded as the reference of ``artifact`` when given.

    An artifact made by cnnexport carries the input spec it was made with; unless the caller
    overrides them, its input shape, mean and std win over the architecture's defaults, so the
    reference sees the inputs the artifact was exported for.
    """
    from exporter.loading.checkpoint import load_checkpoint

    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if artifact is not None:
        stored = artifact_spec(artifact)
        if stored is not None:
            _check_shape_fits(artifact, given.get("input_shape"), stored.input_shape)
            given = {"input_shape": stored.input_shape, "mean": stored.mean, "std": stored.std, **given}
    progress(f"loading {checkpoint}")
    loaded = load_checkpoint(
        checkpoint,
        arch=arch,
        arch_kwargs=arch_kwargs or {},
        trust_pickle=trust_pickle,
        spec_overrides=given,
        weights=weights,
        progress=progress,
        outputs=outputs,
        tasks=tasks,
    )
    which = (
        ""
        if loaded.weights == "model" and not loaded.prefix
        else f", {loaded.weights} weights{' under ' + loaded.prefix if loaded.prefix else ''}"
    )
    spec = loaded.spec
    shown = "" if len(spec.outputs) <= 1 else f", outputs {', '.join(f'{o.name} ({o.task})' for o in spec.outputs)}"
    dropped = f" (left out: {', '.join(loaded.dropped_outputs)})" if loaded.dropped_outputs else ""
    progress(
        f"model: {spec.arch} ({loaded.arch_source}), {spec.num_classes} classes, input {spec.input_shape}{which}{shown}{dropped}"
    )
    for note in loaded.notes:  # what was dropped, moved, upcast or guessed: on the terminal too, not only in the JSON
        progress(f"note: {note}")
    return loaded
