"""The `cnnexport` command line: parse, call the library, print, exit. Nothing else lives here."""

from __future__ import annotations

import json
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from exporter.errors import EXIT_BAD_INPUT, EXIT_VERIFICATION_FAILED, CnnexportError

EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="cnnexport",
    help="Turn a trained PyTorch CNN checkpoint into deployment artifacts and prove each one "
    "numerically against the PyTorch model.\n\nExit codes: 0 ok, 1 verification failed, "
    "2 bad input or usage, 3 backend not available here, 4 internal error (a bug), 130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class Exporter(str, Enum):
    dynamo = "dynamo"
    legacy = "legacy"


# ----------------------------------------------------------------- shared options

Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (default: beside the input).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON report object on stdout (tables go away).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and details.")]
Arch = Annotated[
    Optional[str],
    typer.Option(
        "--arch",
        help="Registry name (see `cnnexport architectures`), file.py:ClassName or package.module:factory. "
        "Default: inferred from the checkpoint's keys and shapes.",
    ),
]
ArchKwargs = Annotated[Optional[str], typer.Option("--arch-kwargs", help='JSON keyword arguments for the builder, e.g. \'{"num_classes": 7}\'.')]
TrustPickle = Annotated[
    bool,
    typer.Option("--trust-pickle", help="Allow loading a whole pickled model. Unpickling runs code from the file: only for files you trust."),
]
Weights = Annotated[
    str,
    typer.Option(
        "--weights",
        help="Which weights of a training checkpoint: model (default), ema (torchvision's model_ema, timm's "
        "state_dict_ema), another top-level key, or a key prefix ending in '.' (e.g. model. of a Lightning .ckpt).",
    ),
]
InputShape = Annotated[Optional[str], typer.Option("--input-shape", help="Input C,H,W (default: the architecture's).")]
Mean = Annotated[Optional[str], typer.Option("--mean", help="Per-channel normalization mean, e.g. 0.485,0.456,0.406.")]
Std = Annotated[Optional[str], typer.Option("--std", help="Per-channel normalization std.")]
Labels = Annotated[Optional[Path], typer.Option("--labels", help="Text file with one class name per line.")]
NoVerify = Annotated[bool, typer.Option("--no-verify", help="Skip verification (reported as skipped, never pass).")]
BatchSizes = Annotated[str, typer.Option("--batch-sizes", help="Batch sizes verified (two or more prove the dynamic batch axis).")]
Images = Annotated[
    Optional[Path], typer.Option("--images", help="Also verify on real inputs: a folder of images, or a .npy/.npz of normalized NCHW arrays.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the random verification inputs.")]
MaxRelErr = Annotated[Optional[float], typer.Option("--max-rel-err", help="Override: allowed max |error| / reference range.")]
MinCosine = Annotated[Optional[float], typer.Option("--min-cosine", help="Override: minimum per-sample cosine similarity.")]
MinTop1 = Annotated[Optional[float], typer.Option("--min-top1", help="Override: minimum top-1 agreement.")]
KeepFailed = Annotated[bool, typer.Option("--keep-failed", help="Keep an artifact that failed verification as NAME.rejected.EXT.")]


class Ui:
    """Where output goes: tables and progress on stderr when --json owns stdout."""

    def __init__(self, json_out: bool = False, quiet: bool = False, verbose: bool = False):
        from rich.console import Console

        self.json_out, self.quiet, self.verbose = json_out, quiet, verbose
        width = None if sys.stdout.isatty() else 160
        self.out = Console(stderr=json_out, quiet=quiet, highlight=False, width=width)
        self.err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
        if not verbose:
            # torch's TorchScript/exporter deprecation chatter is not the user's problem.
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="torch")

    def progress(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[dim]• {escape(message)}[/dim]")

    def emit(self, report: dict) -> None:
        from exporter.report import render_table, to_json

        if self.json_out:
            sys.stdout.write(to_json(report) + "\n")
            sys.stdout.flush()
        else:
            render_table(report, self.out)


def _fail(ui: Ui, message: str, code: int) -> None:
    ui.err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (e.g. a CI timeout) cleans up like Ctrl-C instead of dying mid-write."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def run_guarded(ui: Ui, body) -> None:
    """Map typed errors to one sentence and an exit code; tracebacks only with -v."""
    _terminate_like_ctrl_c()
    try:
        body()
    except typer.Exit:
        raise
    except CnnexportError as exc:
        if ui.verbose:
            ui.err.print_exception()
        _fail(ui, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail(ui, "interrupted; nothing was written under a final name", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - last line of defence: a bug, said plainly
        if ui.verbose:
            ui.err.print_exception()
        _fail(ui, f"unexpected {type(exc).__name__}: {exc} (this is a bug in cnnexport; re-run with -v and report it)", EXIT_INTERNAL)


def _spec_overrides(input_shape, mean, std, labels) -> dict:
    from exporter.spec import parse_floats, parse_input_shape, read_labels

    return {
        "input_shape": parse_input_shape(input_shape) if input_shape else None,
        "mean": parse_floats(mean, "--mean") if mean else None,
        "std": parse_floats(std, "--std") if std else None,
        "labels": read_labels(labels) if labels else None,
    }


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:g}"


def _arch_kwargs(text: str | None) -> dict:
    from exporter.errors import BadInputError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"--arch-kwargs is not valid JSON ({exc.msg}); example: '{{\"num_classes\": 7}}'") from None
    if not isinstance(value, dict):
        raise BadInputError("--arch-kwargs must be a JSON object, e.g. '{\"num_classes\": 7}'")
    return value


def _load(ui: Ui, checkpoint: Path, arch, arch_kwargs, trust_pickle, overrides: dict, weights: str = "model"):
    from exporter.checkpoint import load_checkpoint

    ui.progress(f"loading {checkpoint}")
    loaded = load_checkpoint(checkpoint, arch=arch, arch_kwargs=_arch_kwargs(arch_kwargs), trust_pickle=trust_pickle,
                             spec_overrides=overrides, weights=weights, progress=ui.progress)
    which = "" if loaded.weights == "model" and not loaded.prefix else f", {loaded.weights} weights{' under ' + loaded.prefix if loaded.prefix else ''}"
    ui.progress(f"model: {loaded.spec.arch} ({loaded.arch_source}), {loaded.spec.num_classes} classes, input {loaded.spec.input_shape}{which}")
    return loaded


def _verify_options(no_verify, batch_sizes, images, seed, max_rel_err, min_cosine, min_top1, precision="fp32"):
    from exporter.pipeline import VerifyOptions
    from exporter.spec import parse_batch_sizes

    return VerifyOptions(
        enabled=not no_verify,
        batch_sizes=parse_batch_sizes(batch_sizes),
        seed=seed,
        images=images,
        precision=precision,
        max_rel_err=max_rel_err,
        min_cosine=min_cosine,
        min_top1=min_top1,
    )


def _finish(ui: Ui, result, loaded=None, spec=None) -> None:
    _finish_many(ui, [result], loaded, spec)
    if not ui.json_out and result.files:
        ui.progress(f"wrote {result.path} and {result.path.name}.report.json")


# ----------------------------------------------------------------- commands


@app.command()
def architectures(
    json_out: JsonOut = False,
    source: Annotated[
        Optional[str],
        typer.Option("--source", help="Only 'classic', 'torchvision' or 'timm' entries (timm's ~1,400 need `pip install cnnexport[timm]`)."),
    ] = None,
) -> None:
    """List the architecture registry with each entry's default input spec (timm's with --source timm)."""
    ui = Ui(json_out)

    def body():
        import architectures as registry
        from exporter.errors import BackendUnavailable, BadInputError

        if source not in (None, "classic", "torchvision", "timm"):
            raise BadInputError(f"--source must be classic, torchvision or timm, not {source!r}")
        if source == "timm" and not registry.timm_available():
            from architectures.timm_models import INSTALL_HINT

            raise BackendUnavailable(f"timm is not installed: {INSTALL_HINT}")
        rows = registry.entries(source=source)
        if json_out:
            data = [
                {"name": e.name, "source": e.source, "num_classes": e.num_classes, "input_shape": [e.channels, e.height, e.width],
                 "mean": list(e.mean), "std": list(e.std), "interpolation": e.interpolation, "crop_pct": e.crop_pct,
                 "description": e.description}
                for e in rows
            ]
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            return
        from rich.table import Table

        table = Table(title=f"{len(rows)} architectures", title_justify="left")
        for col in ("name", "source", "classes", "input", "mean", "std"):
            table.add_column(col)
        for e in rows:
            table.add_row(e.name, e.source, str(e.num_classes), f"{e.channels}x{e.height}x{e.width}",
                          ",".join(f"{m:g}" for m in e.mean), ",".join(f"{s:g}" for s in e.std))
        ui.out.print(table)
        if source is None:
            ui.out.print("timm's models: `cnnexport architectures --source timm`" + ("" if registry.timm_available() else " (after pip install 'cnnexport[timm]')"))

    run_guarded(ui, body)


@app.command()
def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (.pt/.pth/.safetensors/TorchScript/.pt2).")],
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    flops: Annotated[bool, typer.Option("--flops", help="Also count FLOPs/MACs of one image at the input spec.")] = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Show what a checkpoint holds: form, architecture, classes, parameters, input spec (and FLOPs)."""
    ui = Ui(json_out, verbose=verbose)

    def body():
        from exporter.report import model_section

        loaded = _load(Ui(json_out, quiet=True), checkpoint, arch, arch_kwargs, trust_pickle, _spec_overrides(input_shape, mean, std, labels), weights)
        info = model_section(loaded)
        info["notes"] = loaded.notes
        info["bytes"] = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) if checkpoint.is_dir() else checkpoint.stat().st_size
        if flops:
            from exporter.flops import model_cost

            info.update(model_cost(loaded))
        if json_out:
            sys.stdout.write(json.dumps(info, indent=2) + "\n")
            return
        from rich.table import Table

        table = Table(show_header=False, title=str(checkpoint), title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row("form", escape(loaded.form) + (f"  [dim](written by {escape(loaded.written_by)})[/dim]" if loaded.written_by else ""))
        if loaded.weights != "model" or loaded.prefix:
            table.add_row("weights", escape(loaded.weights + (f", under prefix {loaded.prefix}" if loaded.prefix else "")))
        table.add_row("architecture", f"{escape(loaded.spec.arch)}  [dim]({escape(loaded.arch_source)})[/dim]")
        table.add_row("classes", str(loaded.spec.num_classes))
        table.add_row("parameters", f"{loaded.params:,}")
        table.add_row("size on disk", f"{info['bytes'] / 1e6:.2f} MB")
        if flops:
            table.add_row("FLOPs / image", f"{_si(info['flops'])} ({_si(info['macs'])} MACs)")
        table.add_row("input", "x".join(map(str, loaded.spec.input_shape)))
        table.add_row("mean", ", ".join(f"{v:g}" for v in loaded.spec.channel_mean()))
        table.add_row("std", ", ".join(f"{v:g}" for v in loaded.spec.channel_std()))
        if loaded.spec.interpolation or loaded.spec.crop_pct:
            table.add_row("preprocess", escape(f"resize {loaded.spec.interpolation or '?'}, crop_pct {loaded.spec.crop_pct or '?'}"))
        if loaded.spec.labels:
            table.add_row("labels", escape(", ".join(loaded.spec.labels[:10])) + (" …" if len(loaded.spec.labels) > 10 else ""))
        for note in loaded.notes:
            table.add_row("note", escape(note))
        ui.out.print(table)

    run_guarded(ui, body)


@app.command()
def onnx(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to export.")],
    output: Output = None,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default: the exporter's).")] = None,
    exporter: Annotated[Exporter, typer.Option("--exporter", help="dynamo (torch.export based) or legacy (TorchScript based).")] = Exporter.dynamo,
    input_name: Annotated[str, typer.Option("--input-name", help="Name of the graph input.")] = "input",
    output_name: Annotated[str, typer.Option("--output-name", help="Name of the graph output.")] = "logits",
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    no_verify: NoVerify = False,
    batch_sizes: BatchSizes = "1,4",
    images: Images = None,
    seed: Seed = 0,
    max_rel_err: MaxRelErr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    keep_failed: KeepFailed = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Export ONNX with a dynamic batch axis, then verify it against the checkpoint."""
    _export_command("onnx", locals(), {"opset": opset, "exporter": exporter.value, "input_name": input_name, "output_name": output_name})


@app.command()
def torchscript(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to export.")],
    output: Output = None,
    script: Annotated[bool, typer.Option("--script", help="Use torch.jit.script instead of tracing.")] = False,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    no_verify: NoVerify = False,
    batch_sizes: BatchSizes = "1,4",
    images: Images = None,
    seed: Seed = 0,
    max_rel_err: MaxRelErr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    keep_failed: KeepFailed = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Export TorchScript (trace by default), then verify it against the checkpoint."""
    _export_command("torchscript", locals(), {"script": script})


def _export_command(kind: str, a: dict, stage_options: dict) -> None:
    ui = Ui(a["json_out"], a["quiet"], a["verbose"])

    def body():
        from exporter.pipeline import default_output, export_artifact

        opts = _verify_options(a["no_verify"], a["batch_sizes"], a["images"], a["seed"], a["max_rel_err"], a["min_cosine"], a["min_top1"])
        loaded = _load(ui, a["checkpoint"], a["arch"], a["arch_kwargs"], a["trust_pickle"],
                       _spec_overrides(a["input_shape"], a["mean"], a["std"], a["labels"]), a["weights"])
        output = a["output"] or default_output(a["checkpoint"], kind)
        result = export_artifact(kind, loaded, output, stage_options, opts, a["keep_failed"], ui.progress)
        _finish(ui, result, loaded)

    run_guarded(ui, body)


@app.command()
def simplify(
    model: Annotated[Path, typer.Argument(help="ONNX model to simplify with onnxsim.")],
    output: Output = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Also verify against this checkpoint.")] = None,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    no_verify: NoVerify = False,
    batch_sizes: BatchSizes = "1,4",
    images: Images = None,
    seed: Seed = 0,
    max_rel_err: MaxRelErr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    keep_failed: KeepFailed = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Simplify an ONNX model (onnxsim); verify against the original and, with --checkpoint, PyTorch."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.pipeline import simplify_artifact

        opts = _verify_options(no_verify, batch_sizes, images, seed, max_rel_err, min_cosine, min_top1)
        loaded = None
        if checkpoint:
            stored = _artifact_spec(model)  # the input spec cnnexport wrote into the ONNX, if it did
            overrides = {"input_shape": stored.input_shape, "mean": stored.mean, "std": stored.std} if stored else {}
            loaded = _load(ui, checkpoint, arch, arch_kwargs, trust_pickle, overrides, weights)
        result = simplify_artifact(model, output, loaded, opts, keep_failed, ui.progress)
        if not json_out:
            ui.progress(f"nodes: {result.details.get('nodes_before')} -> {result.details.get('nodes_after')}")
        _finish(ui, result, loaded, None if loaded else _artifact_spec(model))

    run_guarded(ui, body)


def _artifact_spec(path: Path):
    from exporter.runners import open_runner
    from exporter.spec import ModelSpec

    meta = open_runner(path).metadata
    return ModelSpec.from_dict(meta) if meta else None


@app.command()
def verify(
    artifact: Annotated[Path, typer.Argument(help="Artifact to check (.onnx, TorchScript, ...).")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="The PyTorch reference.")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Or: another artifact as the reference.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Tolerance set: fp32, fp16 or int8.")] = "fp32",
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    batch_sizes: BatchSizes = "1,4",
    images: Images = None,
    seed: Seed = 0,
    max_rel_err: MaxRelErr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Re-check an existing artifact against the checkpoint; exit 1 if it does not compute the same."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.errors import BadInputError
        from exporter.pipeline import verify_existing
        from exporter.verify import TOLERANCES

        if precision not in TOLERANCES:
            raise BadInputError(f"--precision must be one of {', '.join(TOLERANCES)}")
        if artifact.is_dir() and not artifact.suffix == ".mlpackage":
            from exporter.trt_pipeline import lint_kit

            # a TensorRT build kit: the engine is built elsewhere; here, would TensorRT's parser take its model?
            found = lint_kit(artifact, ui.progress)
            if json_out:
                sys.stdout.write(json.dumps(found, indent=2) + "\n")
            else:
                ui.out.print(f"TensorRT lint of {escape(found['model'])}: {found['tensorrt_lint']['status']}; "
                             "the engine itself is verified on the NVIDIA machine (verify.sh)")
            return
        opts = _verify_options(False, batch_sizes, images, seed, max_rel_err, min_cosine, min_top1, precision)
        overrides = _spec_overrides(input_shape, mean, std, labels)
        loaded = _load(ui, checkpoint, arch, arch_kwargs, trust_pickle, overrides, weights) if checkpoint else None
        ui.progress(f"verifying {artifact}")
        result = verify_existing(artifact, loaded, reference, opts)
        from exporter.report import build_report

        ui.emit(build_report([result], loaded, None if loaded else _artifact_spec(reference or artifact)))
        if result.verification.status == "fail":
            _fail(ui, f"verification failed: {result.verification.reason}", EXIT_VERIFICATION_FAILED)

    run_guarded(ui, body)


class Precision(str, Enum):
    int8 = "int8"
    fp16 = "fp16"


class Target(str, Enum):
    cpu = "cpu"
    tensorrt = "tensorrt"


class Method(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class Overflow(str, Enum):
    keep = "keep"
    fail = "fail"
    ignore = "ignore"


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="ONNX model, or a checkpoint (exported to ONNX first).")],
    precision: Annotated[Precision, typer.Option("--precision", help="int8 (static, calibrated) or fp16.")] = Precision.int8,
    target: Annotated[Target, typer.Option("--target", help="int8 flavour: cpu (uint8 act/int8 weights) or tensorrt (symmetric + calibration cache).")] = Target.cpu,
    calib: Annotated[Optional[str], typer.Option("--calib", help="Calibration data: image folder, .npy/.npz of normalized inputs, or 'digits'.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Calibration samples (seeded shuffle).")] = 256,
    holdout: Annotated[int, typer.Option("--holdout", help="Further samples kept out of calibration to verify on.")] = 64,
    method: Annotated[Method, typer.Option("--method", help="Calibration method.")] = Method.minmax,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Node name or op type to keep in float (repeatable).")] = None,
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Per-channel weight scales.")] = True,
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--fp16-io", help="fp16: keep fp32 inputs/outputs.")] = True,
    fp16_overflow: Annotated[Overflow, typer.Option("--fp16-overflow", help="fp16: values beyond ±65504 (and factors below fp16's normal range) -> keep those nodes fp32, fail, or ignore.")] = Overflow.keep,
    trt_version: Annotated[str, typer.Option("--trt-version", help="TensorRT version written in the calibration cache header.")] = "10.8.0",
    eval_data: Annotated[Optional[str], typer.Option("--eval", help="Labelled data (ImageFolder, .npz with labels, or 'digits') for top-1/top-5.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="PyTorch reference when MODEL is ONNX (default: the fp32 ONNX).")] = None,
    output: Output = None,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    no_verify: NoVerify = False,
    batch_sizes: BatchSizes = "1,4",
    images: Images = None,
    seed: Seed = 0,
    max_rel_err: MaxRelErr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    keep_failed: KeepFailed = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Static INT8 (CPU or TensorRT flavour) or FP16 ONNX, verified and optionally evaluated."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.pipeline import QuantizeOptions, default_output, export_artifact, quantize_artifact

        opts = _verify_options(no_verify, batch_sizes, images, seed, max_rel_err, min_cosine, min_top1)
        overrides = _spec_overrides(input_shape, mean, std, labels)
        results = []
        loaded = None
        source = model
        if model.suffix.lower() != ".onnx":
            loaded = _load(ui, model, arch, arch_kwargs, trust_pickle, overrides, weights)
            exported = export_artifact("onnx", loaded, default_output(model, "onnx"), {}, opts, keep_failed, ui.progress)
            results.append(exported)
            if exported.verification.status == "fail":
                return _finish_many(ui, results, loaded)
            source = exported.path
        elif checkpoint is not None:
            loaded = _load(ui, checkpoint, arch, arch_kwargs, trust_pickle, overrides, weights)
        options = QuantizeOptions(
            precision=precision.value, target=target.value, calibration=calib, samples=samples, holdout=holdout,
            method=method.value, per_channel=per_channel, exclude=tuple(exclude or ()), keep_io_types=keep_io_types,
            fp16_overflow=fp16_overflow.value, trt_version=trt_version, evaluation=eval_data, seed=seed,
        )
        results.append(quantize_artifact(source, options, output, loaded, opts, keep_failed, ui.progress))
        _finish_many(ui, results, loaded, None if loaded else _artifact_spec(source))
        if not json_out and "eval" in results[-1].details:
            _render_eval(ui, results[-1].details["eval"])

    run_guarded(ui, body)


class TrtPrecision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class Int8Mode(str, Enum):
    qdq = "qdq"
    calibrator = "calibrator"


class HardwareCompat(str, Enum):
    none = "none"
    ampere_plus = "ampere_plus"
    same_cc = "same_cc"


@app.command()
def tensorrt(
    model: Annotated[Path, typer.Argument(help="ONNX model, or a checkpoint (exported to ONNX first).")],
    precision: Annotated[TrtPrecision, typer.Option("--precision", help="fp32, fp16, or int8 (needs --calib).")] = TrtPrecision.fp32,
    batch: Annotated[str, typer.Option("--batch", help="Optimization profile of the batch axis, MIN:OPT:MAX.")] = "1:8:32",
    int8_mode: Annotated[Int8Mode, typer.Option("--int8-mode", help="int8: qdq (explicit Q/DQ model, TensorRT 10 and 11) or calibrator (fp32 model + calibration cache, TensorRT 10 only).")] = Int8Mode.qdq,
    calib: Annotated[Optional[str], typer.Option("--calib", help="int8 calibration data: image folder, .npy/.npz of normalized inputs, or 'digits'.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Calibration samples (seeded shuffle).")] = 256,
    holdout: Annotated[int, typer.Option("--holdout", help="Further samples kept out of calibration to verify on.")] = 64,
    method: Annotated[Method, typer.Option("--method", help="Calibration method.")] = Method.minmax,
    workspace: Annotated[Optional[str], typer.Option("--workspace", help="Builder workspace limit, e.g. 512M or 2G (default: TensorRT's).")] = None,
    opt_level: Annotated[Optional[int], typer.Option("--opt-level", help="Builder optimization level 0-5 (TensorRT's default: 3).")] = None,
    hardware_compat: Annotated[HardwareCompat, typer.Option("--hardware-compat", help="none (this GPU), ampere_plus (any Ampere or newer), same_cc (same compute capability).")] = HardwareCompat.none,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Engine also runs on later TensorRT versions (embeds the lean runtime; may be slower).")] = False,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file: read if present, updated after the build (faster rebuilds).")] = None,
    emit_script: Annotated[Optional[Path], typer.Option("--emit-script", help="Where TensorRT is absent: write a build kit (models, build.sh with the trtexec command, README) to this folder.")] = None,
    trt_version: Annotated[Optional[str], typer.Option("--trt-version", help="With --emit-script: the target machine's TensorRT version (default 10.8.0); decides flags and models.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="PyTorch reference when MODEL is ONNX (default: the ONNX model).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Engine file (default: MODEL.engine beside the model).")] = None,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    no_verify: NoVerify = False,
    images: Images = None,
    seed: Seed = 0,
    max_rel_err: MaxRelErr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    keep_failed: KeepFailed = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """TensorRT engine (+ sidecar JSON), verified at the profile's min and max batch; or, with --emit-script, a build kit."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.pipeline import default_output, export_artifact
        from exporter.stages.tensorrt import require_tensorrt
        from exporter.trt_pipeline import TensorRTOptions, tensorrt_artifacts

        options = TensorRTOptions(
            precision=precision.value, int8_mode=int8_mode.value, batch=batch, workspace=workspace, optimization_level=opt_level,
            hardware_compatibility=hardware_compat.value, version_compatible=version_compatible, timing_cache=timing_cache,
            trt_version=trt_version, emit_script=emit_script, calibration=calib, samples=samples, holdout=holdout,
            method=method.value, seed=seed,
        )
        options.build_options()  # bad options: exit 2 before any work
        if emit_script is None:
            require_tensorrt()  # no tensorrt or no GPU: exit 3 before any work, saying what to do
        opts = _verify_options(no_verify, "1,4", images, seed, max_rel_err, min_cosine, min_top1)
        overrides = _spec_overrides(input_shape, mean, std, labels)
        results, loaded, source = [], None, model
        if model.suffix.lower() != ".onnx":
            loaded = _load(ui, model, arch, arch_kwargs, trust_pickle, overrides, weights)
            exported = export_artifact("onnx", loaded, default_output(model, "onnx"), {}, opts, keep_failed, ui.progress)
            results.append(exported)
            if exported.verification.status == "fail":
                return _finish_many(ui, results, loaded)
            source = exported.path
        elif checkpoint is not None:
            loaded = _load(ui, checkpoint, arch, arch_kwargs, trust_pickle, overrides, weights)
        results += tensorrt_artifacts(source, options, output, loaded, opts, keep_failed, ui.progress)
        _finish_many(ui, results, loaded, None if loaded else _artifact_spec(source))
        kit = results[-1].details.get("kit") if results[-1].kind == "tensorrt" else None
        if kit and not json_out:
            ui.progress(f"wrote the build kit {kit}: on the NVIDIA machine run `bash {kit}/build.sh`, then `{results[-1].details['verify']}`")

    run_guarded(ui, body)


def _render_eval(ui: Ui, evaluation: dict) -> None:
    from rich.table import Table

    table = Table(title=f"accuracy on {escape(evaluation['source'])} ({evaluation['samples']} samples)", title_justify="left")
    for col in ("model", "top-1", f"top-{evaluation.get('top', 5)}", "agrees with reference", "top-1 drop"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in evaluation["results"].items():
        top5 = r.get(f"top{evaluation.get('top', 5)}")
        table.add_row(escape(name), f"{r['top1'] * 100:.2f}%", "-" if top5 is None else f"{top5 * 100:.2f}%",
                      f"{r['agreement_with_reference'] * 100:.2f}%", f"{r['top1_drop_points']:+.2f} pts")
    ui.out.print(table)


def _finish_many(ui: Ui, results: list, loaded=None, spec=None) -> None:
    """Emit one report for several artifacts; exit 1 if any failed verification."""
    from exporter.report import build_report

    ui.emit(build_report(results, loaded, spec))
    failed = [r for r in results if r.verification.status == "fail"]
    if failed:
        first = failed[0]
        where = f"kept as {first.path}" if first.files else "not written (use --keep-failed to keep it)"
        hint = ""
        if first.kind.startswith("int8") and first.details.get("method") == "minmax":
            hint = "; int8 options to try: --method percentile or entropy, --exclude OP_TYPE to keep such layers in float"
        _fail(ui, f"verification failed for {first.kind}: {first.verification.reason}; the artifact was {where}{hint}",
              EXIT_VERIFICATION_FAILED)


@app.command()
def bench(
    targets: Annotated[list[Path], typer.Argument(help="Checkpoints (PyTorch eager baseline), artifacts, or folders of artifacts.")],
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, e.g. 1,8,32.")] = "1,8",
    threads: Annotated[Optional[int], typer.Option("--threads", help="Threads for torch and onnxruntime alike (default: torch's).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    seconds: Annotated[float, typer.Option("--seconds", help="Time budget per target and batch size.")] = 2.0,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 3,
    min_runs: Annotated[int, typer.Option("--min-runs", help="At least this many timed runs.")] = 5,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Target label to compare against (default: PyTorch eager).")] = None,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write a latency/throughput chart (PNG).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Reference checkpoint (also benchmarked as PyTorch eager).")] = None,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Latency (p50/p90/p99), throughput and peak memory of each artifact, with speed-ups over a baseline."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter import bench as bench_mod
        from exporter.errors import BadInputError
        from exporter.spec import parse_batch_sizes

        if device not in ("cpu", "cuda"):
            raise BadInputError("--device must be cpu or cuda")
        if seconds <= 0 or warmup < 0 or min_runs < 1 or (threads is not None and threads < 1):
            raise BadInputError("--seconds must be positive, --warmup >= 0, --min-runs >= 1, --threads >= 1")
        found = bench_mod.discover(list(targets) + ([checkpoint] if checkpoint else []))
        loaded, spec = _reference_for(ui, found, arch, arch_kwargs, trust_pickle, input_shape, weights)
        settings = bench_mod.BenchSettings(batches=parse_batch_sizes(batch, "--batch"), threads=threads, device=device, warmup=warmup,
                                           min_runs=min_runs, seconds=seconds, baseline=baseline)
        result = bench_mod.bench(found, spec, settings, loaded, ui.progress)
        if plot_path:
            result["plot"] = str(bench_mod.plot(result, plot_path))
        if json_out:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        else:
            bench_mod.render(result, ui.out)
            if plot_path:
                ui.progress(f"wrote {plot_path}")

    run_guarded(ui, body)


def _reference_for(ui: Ui, found: list, arch, arch_kwargs, trust_pickle, input_shape, weights="model"):
    """The checkpoint among the targets (loaded), else the spec stored in the first artifact."""
    from exporter.errors import BadInputError

    checkpoint = next((t.path for t in found if t.kind == "pytorch"), None)
    overrides = _spec_overrides(input_shape, None, None, None)
    if checkpoint is not None:
        loaded = _load(ui, checkpoint, arch, arch_kwargs, trust_pickle, overrides, weights)
        return loaded, loaded.spec
    for t in found:
        spec = _artifact_spec(t.path) if t.kind in ("onnx", "torchscript") else None
        if spec is not None:
            return None, spec.with_overrides(**{k: v for k, v in overrides.items() if v is not None})
    raise BadInputError("no checkpoint among the targets and no artifact carries an input spec; pass --checkpoint")


@app.command(name="eval")
def eval_(
    targets: Annotated[list[Path], typer.Argument(help="Artifacts or folders of artifacts to evaluate.")],
    data: Annotated[str, typer.Option("--data", help="Labelled data: ImageFolder (one sub-folder per class), .npz with inputs+labels, or 'digits'.")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="The reference (default: the first artifact).")] = None,
    top: Annotated[int, typer.Option("--top", help="Also report top-k accuracy.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per batch (data is streamed).")] = 32,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Top-1/top-k accuracy of the reference and every artifact, agreement and where they disagree."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.bench import discover
        from exporter.inputs import open_source
        from exporter.errors import BadInputError
        from exporter.eval import evaluate
        from exporter.runners import open_runner
        from exporter.runners.torch import TorchRunner

        if top < 1 or batch_size < 1:
            raise BadInputError("--top and --batch-size must be at least 1")
        found = [t for t in discover(list(targets) + ([checkpoint] if checkpoint else []))]
        loaded, spec = _reference_for(ui, found, arch, arch_kwargs, trust_pickle, input_shape, weights)
        runners = {}
        if loaded is not None:
            runners["pytorch (reference)"] = TorchRunner(loaded.module)
        for t in found:
            if t.kind != "pytorch":
                runners[t.label] = open_runner(t.path, t.kind)
        source = open_source(data, spec, split="test")
        ui.progress(f"evaluating {len(runners)} model(s) on {source.description}")
        result = evaluate(runners, source, batch_size, min(top, spec.num_classes), spec.labels)
        if json_out:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        else:
            _render_eval(ui, result)
            for name, r in list(result["results"].items())[1:]:
                if r["disagreements"]:
                    pairs = ", ".join(f"{d['reference']}->{d['artifact']} x{d['count']}" for d in r["disagreements"])
                    ui.out.print(f"[dim]{escape(name)} disagrees with the reference on: {escape(pairs)}[/dim]")

    run_guarded(ui, body)


@app.command()
def recipes(json_out: JsonOut = False) -> None:
    """List the shipped recipes (use one with `cnnexport run --recipe NAME`)."""
    ui = Ui(json_out)

    def body():
        from exporter import recipe as recipe_mod

        rows = []
        for name, path in recipe_mod.shipped().items():
            r = recipe_mod.load(path)
            rows.append({"name": name, "path": str(path), "description": r.description,
                         "stages": [n for n, s in r.stages if s.enabled]})
        if json_out:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        from rich.table import Table

        table = Table(title="shipped recipes", title_justify="left")
        for col in ("name", "stages", "description"):
            table.add_column(col)
        for row in rows:
            table.add_row(row["name"], ", ".join(row["stages"]), escape(row["description"]))
        ui.out.print(table)

    run_guarded(ui, body)


@app.command()
def run(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to build every artifact from.")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe YAML, or the name of a shipped one (see `cnnexport recipes`).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output folder (default: dist/<checkpoint name>/).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe key: stages.coreml.precision=fp32 (repeatable).")] = None,
    calib: Annotated[Optional[str], typer.Option("--calib", help="Calibration data for the INT8 stages (image folder, .npy/.npz); the same as --set calibration.data=...")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Independent stages run in parallel.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; run nothing.")] = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run a recipe: every stage it enables, cached, resumable, with manifest.json and report.md."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter import recipe as recipe_mod
        from exporter.run import plan, run_recipe

        loaded_recipe = recipe_mod.load(recipe, [*(set_ or []), *([f"calibration.data={calib}"] if calib else [])])
        stages = plan(loaded_recipe)
        out_dir = output or Path("dist") / checkpoint.name.split(".")[0]
        if dry_run:
            rows = [{"stage": s.spec.name, "input": s.upstream or str(checkpoint), "options": s.options} for s in stages]
            if json_out:
                sys.stdout.write(json.dumps({"recipe": loaded_recipe.name, "output": str(out_dir), "plan": rows}, indent=2) + "\n")
            else:
                ui.out.print(f"recipe {escape(loaded_recipe.name)} -> {escape(str(out_dir))} (nothing is run)")
                for row in rows:
                    ui.out.print(f"  {row['stage']:<14} <- {escape(row['input'])}  {escape(json.dumps(row['options']))}")
            return
        result = run_recipe(loaded_recipe, checkpoint, out_dir, jobs, ui.progress)
        if json_out:
            sys.stdout.write(json.dumps({"manifest": result.manifest, "timings": {o.name: {"seconds": round(o.seconds, 3), "cached": o.cached}
                                                                                  for o in result.outcomes}}, indent=2) + "\n")
        else:
            _render_run(ui, result)
        if result.failed:
            first = result.failed[0]
            _fail(ui, f"stage {first.name}: {first.status}", EXIT_VERIFICATION_FAILED if first.status == "fail" else EXIT_BAD_INPUT)

    run_guarded(ui, body)


def _render_run(ui: Ui, result) -> None:
    from rich.table import Table

    table = Table(title=f"cnnexport run -> {escape(str(result.out_dir))} ({result.seconds:.1f}s)", title_justify="left")
    for col in ("stage", "artifact", "status", "max err/range", "cosine", "top-1", "time", "cached"):
        table.add_column(col, overflow="fold")
    for o in result.outcomes:
        v = o.entry.get("verification", {}) if o.entry else {}
        colour = "green" if o.status == "pass" else "red" if o.status == "fail" or o.status.startswith("error") else "yellow"
        files = ", ".join(Path(f["path"]).name for f in o.entry.get("files", [])) if o.entry else "-"
        table.add_row(o.name, escape(files or "-"), f"[{colour}]{escape(o.status)}[/{colour}]",
                      "-" if v.get("max_rel_err") is None else f"{v['max_rel_err']:.2e}",
                      "-" if v.get("cosine") is None else f"{v['cosine']:.6f}",
                      "-" if v.get("top1_agreement") is None else f"{v['top1_agreement']:.3f}",
                      f"{o.seconds:.1f}s", "yes" if o.cached else "no")
    ui.out.print(table)
    ui.progress(f"wrote {result.out_dir / 'manifest.json'} and {result.out_dir / 'report.md'}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the checkpoint, artifacts and reports.")] = Path("cnnexport-demo"),
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs on the digits.")] = 12,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train LeNet-5 on scikit-learn's digits, export every artifact, verify each, compare accuracy."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.demo import run_demo
        from exporter.errors import BadInputError

        if epochs < 1:
            raise BadInputError("--epochs must be at least 1")
        report = run_demo(output, epochs=epochs, progress=ui.progress)
        ui.emit(report)
        if not json_out:
            from exporter.demo import render_accuracy

            render_accuracy(report, ui.out)
        if any(a["verification"]["status"] == "fail" for a in report["artifacts"]):
            _fail(ui, "the demo produced an artifact that failed verification", EXIT_VERIFICATION_FAILED)

    run_guarded(ui, body)


class CoreMLPrecision(str, Enum):
    fp16 = "fp16"
    fp32 = "fp32"


@app.command()
def coreml(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to convert.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output .mlpackage (default: beside the checkpoint).")] = None,
    precision: Annotated[CoreMLPrecision, typer.Option("--precision", help="Compute precision of the ML program.")] = CoreMLPrecision.fp16,
    image_input: Annotated[bool, typer.Option("--image-input", help="Take an image (0..255 pixels) and fold the normalization into the model.")] = False,
    classifier: Annotated[bool, typer.Option("--classifier", help="Classifier outputs: classLabel and classLabel_probs (softmax), labels from --labels.")] = False,
    batch: Annotated[str, typer.Option("--batch", help="Batch range MIN:MAX, or N for a fixed batch.")] = "1:64",
    min_target: Annotated[Optional[str], typer.Option("--min-target", help="Minimum deployment target: iOS15..iOS18, macOS12..macOS15 (default iOS15; iOS16 with --compress).")] = None,
    compress: Annotated[Optional[str], typer.Option("--compress", help="Weight compression: palettize:N (N bits, k-means LUT) or linear8 (int8 per channel).")] = None,
    author: Annotated[Optional[str], typer.Option("--author", help="Model metadata: author.")] = None,
    license_: Annotated[Optional[str], typer.Option("--license", help="Model metadata: license.")] = None,
    version: Annotated[Optional[str], typer.Option("--version", help="Model metadata: version string.")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="Model metadata: short description.")] = None,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    no_verify: NoVerify = False,
    batch_sizes: BatchSizes = "1,4",
    images: Images = None,
    seed: Seed = 0,
    max_rel_err: MaxRelErr = None,
    min_cosine: MinCosine = None,
    min_top1: MinTop1 = None,
    keep_failed: KeepFailed = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Convert to a Core ML ML program (.mlpackage); verify it on Linux with the MIL interpreter.

    Tolerances: fp32/fp16 programs use the fp32/fp16 pass rule, a compressed program the int8 rule. Verification batch sizes are clipped into --batch.
    """
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.pipeline import coreml_plan, default_output, export_artifact
        from exporter.spec import parse_batch_sizes

        (low, high), compression, sizes, tolerance_set = coreml_plan(batch, compress, parse_batch_sizes(batch_sizes))
        opts = _verify_options(no_verify, ",".join(map(str, sizes)), images, seed, max_rel_err, min_cosine, min_top1,
                               tolerance_set or precision.value)
        loaded = _load(ui, checkpoint, arch, arch_kwargs, trust_pickle, _spec_overrides(input_shape, mean, std, labels), weights)
        target = output or default_output(checkpoint, "coreml")
        stage_options = {
            "precision": precision.value, "image_input": image_input, "classifier": classifier, "batch": (low, high),
            "min_target": min_target, "compress": compression, "author": author, "license": license_,
            "version": version, "description": description,
        }
        result = export_artifact("coreml", loaded, target, stage_options, opts, keep_failed, ui.progress)
        _finish(ui, result, loaded)

    run_guarded(ui, body)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
