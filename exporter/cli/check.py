"""The verbs that look at what exists: inspect, verify, bench, eval."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from exporter.cli import common
from exporter.cli.params import (
    Arch,
    ArchKwargs,
    BatchSizes,
    Command,
    Conf,
    Images,
    InputShape,
    Iou,
    JsonOut,
    Junit,
    Labels,
    MaxRelErr,
    Mean,
    MinCosine,
    MinTop1,
    Outputs,
    Quiet,
    Seed,
    Std,
    Task,
    TrustPickle,
    Verbose,
    Weights,
)
from exporter.cli.release import PublicKey, TrustChain
from exporter.cli.ui import Ui, fail, render_eval, run_guarded
from exporter.errors import EXIT_VERIFICATION_FAILED
from exporter.options import DetectOptions

DETECT_DEFAULTS = DetectOptions()


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:g}"


def inspect(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint file (.pt/.pth/.safetensors/TorchScript/.pt2), or an artifact (.onnx, .pte, .tflite, ...) "
            "to show what it declares."
        ),
    ],
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    outputs: Outputs = None,
    task: Task = None,
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    labels: Labels = None,
    flops: Annotated[bool, typer.Option("--flops", help="Also count FLOPs/MACs of one image at the input spec.")] = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Show what a checkpoint holds: form, architecture, classes, outputs and their tasks, parameters, input spec (and FLOPs).

    Given an artifact instead, shows what its runtime reads from it: inputs, outputs, batch range, precision, spec.
    """
    args = dict(locals())
    ui = Ui(json_out, verbose=verbose)

    def body():
        from exporter.check import checkpoint_facts
        from exporter.cli.artifact import inspect_artifact

        if inspect_artifact(ui, checkpoint, json_out):
            return
        loaded = common.load(Ui(json_out, quiet=True).progress, checkpoint, args)
        info = checkpoint_facts(loaded, checkpoint, flops)
        if json_out:
            sys.stdout.write(json.dumps(info, indent=2) + "\n")
            return
        _print_checkpoint(ui, checkpoint, loaded, info, flops)

    run_guarded(ui, body)


def _print_checkpoint(ui: Ui, checkpoint: Path, loaded, info: dict, flops: bool) -> None:
    """inspect's table for a checkpoint: form, architecture, outputs, size and input spec, then the loader's notes."""
    from rich.table import Table

    table = Table(show_header=False, title=str(checkpoint), title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "form", escape(loaded.form) + (f"  [dim](written by {escape(loaded.written_by)})[/dim]" if loaded.written_by else "")
    )
    if loaded.weights != "model" or loaded.prefix:
        table.add_row("weights", escape(loaded.weights + (f", under prefix {loaded.prefix}" if loaded.prefix else "")))
    table.add_row("architecture", f"{escape(loaded.spec.arch)}  [dim]({escape(loaded.arch_source)})[/dim]")
    table.add_row("classes", str(loaded.spec.num_classes))
    shown = [f"{o.name} {o.task} ({'x'.join(map(str, ('N', *o.shape)))})" for o in loaded.spec.outputs]
    if loaded.dropped_outputs:
        shown.append(f"[dim]left out: {', '.join(loaded.dropped_outputs)}[/dim]")
    table.add_row(
        "outputs",
        escape(", ".join(shown[: len(loaded.spec.outputs)])) + "".join(f"; {x}" for x in shown[len(loaded.spec.outputs) :]),
    )
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


def verify(
    artifact: Annotated[Path, typer.Argument(help="Artifact to check (.onnx, TorchScript, ...).")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="The PyTorch reference.")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Or: another artifact as the reference.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Tolerance set: fp32, fp16 or int8.")] = "fp32",
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    outputs: Outputs = None,
    task: Task = None,
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
    conf: Conf = DETECT_DEFAULTS.conf,
    iou: Iou = DETECT_DEFAULTS.iou,
    explain: Annotated[
        bool, typer.Option("--explain", help="Also compare an ONNX artifact layer by layer (as `cnnexport debug`).")
    ] = False,
    public_key: PublicKey = None,
    certificate_chain: TrustChain = None,
    junit: Junit = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Re-check an existing artifact against the checkpoint; exit 1 if it does not compute the same.

    With --public-key, ARTIFACT is a signed folder: its signatures, digests and (with --checkpoint) verdicts."""
    args = dict(locals())
    ui = Ui(json_out, quiet, verbose, junit, "cnnexport verify")

    def body():
        from exporter.check import check_kit, verify_artifact
        from exporter.errors import BadInputError
        from exporter.verify import TOLERANCES

        if precision not in TOLERANCES:
            raise BadInputError(f"--precision must be one of {', '.join(TOLERANCES)}")
        if public_key is not None or certificate_chain:
            from exporter.cli.release import check_release

            opts = common.verify_options(args, precision)
            load = lambda: common.load(ui.progress, checkpoint, args)  # noqa: E731 - only with --checkpoint
            return check_release(ui, artifact, public_key, certificate_chain, checkpoint, load, opts)
        ui.refuse_junit_on(("the artifact", artifact), ("the reference", reference), *common.reads(args))
        found = check_kit(artifact, ui.progress)  # a folder standing for an artifact built elsewhere (TensorRT's build kit)
        if found is not None:
            if json_out:
                sys.stdout.write(json.dumps(found, indent=2) + "\n")
            else:
                ui.out.print(escape(found["summary"]))
            return
        opts = common.verify_options(args, precision)
        loaded = common.load(ui.progress, checkpoint, args) if checkpoint else None
        report, failure = verify_artifact(artifact, loaded, reference, opts, explain, images, ui.progress)
        ui.emit(report)
        if explain and not json_out:
            from exporter.rescue.debug import render

            render(report["explain"], ui.out)
        if failure is not None:
            fail(ui, failure, EXIT_VERIFICATION_FAILED)

    run_guarded(ui, body)


def bench(
    targets: Annotated[
        list[Path], typer.Argument(help="Checkpoints (PyTorch eager baseline), artifacts, or folders of artifacts.")
    ],
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, e.g. 1,8,32.")] = "1,8",
    threads: Annotated[
        Optional[int], typer.Option("--threads", min=1, help="Threads for torch and onnxruntime alike (default: torch's).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    seconds: Annotated[float, typer.Option("--seconds", min=0.1, help="Time budget per target and batch size.")] = 2.0,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 3,
    min_runs: Annotated[int, typer.Option("--min-runs", min=1, help="At least this many timed runs.")] = 5,
    baseline: Annotated[
        Optional[str], typer.Option("--baseline", help="Target label to compare against (default: PyTorch eager).")
    ] = None,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write a latency/throughput chart (PNG).")] = None,
    checkpoint: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="Reference checkpoint (also benchmarked as PyTorch eager).")
    ] = None,
    runtime: Annotated[
        Optional[list[str]],
        typer.Option("--runtime", help="Also time every ONNX target on this runtime: openvino (repeatable; onnxruntime always)."),
    ] = None,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    outputs: Outputs = None,
    task: Task = None,
    input_shape: InputShape = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Latency (p50/p90/p99), throughput and peak memory of each artifact, with speed-ups over a baseline."""
    args = dict(locals())
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.errors import BadInputError
        from exporter.measure import bench as bench_mod
        from exporter.spec import parse_batch_sizes

        if device not in ("cpu", "cuda"):
            raise BadInputError("--device must be cpu or cuda")
        if seconds <= 0 or warmup < 0 or min_runs < 1 or (threads is not None and threads < 1):
            raise BadInputError("--seconds must be positive, --warmup >= 0, --min-runs >= 1, --threads >= 1")
        found = bench_mod.discover(list(targets) + ([checkpoint] if checkpoint else []))
        loaded, spec = bench_mod.reference(found, lambda path: common.load(ui.progress, path, args), common.spec_overrides(args))
        settings = bench_mod.BenchSettings(
            batches=parse_batch_sizes(batch, "--batch"),
            threads=threads,
            device=device,
            warmup=warmup,
            min_runs=min_runs,
            seconds=seconds,
            baseline=baseline,
            runtimes=("onnxruntime", *[r for r in (runtime or []) if r != "onnxruntime"]),
        )
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


def eval_(
    targets: Annotated[list[Path], typer.Argument(help="Artifacts or folders of artifacts to evaluate.")],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Labelled data: ImageFolder (one sub-folder per class), .npz with inputs+labels, "
            "or 'digits'; for a segmentation model a folder with images/ + masks/ (PNG class indices) "
            "or an .npz with images + masks; for a detector an Ultralytics data.yaml, a folder with images/ + "
            "labels/ (YOLO txt) or COCO JSON annotations.",
        ),
    ],
    checkpoint: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="The reference (default: the first artifact).")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Also report top-k accuracy.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per batch (data is streamed).")] = 32,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    outputs: Outputs = None,
    task: Task = None,
    input_shape: InputShape = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Accuracy of the reference and every artifact side by side: top-1/top-k, agreement and where they disagree;
    mIoU and pixel accuracy for a segmentation model; mAP50 and mAP50-95 for a detector."""
    args = dict(locals())
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.errors import BadInputError
        from exporter.measure.bench import discover, reference
        from exporter.measure.eval import evaluate_targets

        if top < 1 or batch_size < 1:
            raise BadInputError("--top and --batch-size must be at least 1")
        found = discover(list(targets) + ([checkpoint] if checkpoint else []))
        loaded, spec = reference(found, lambda path: common.load(ui.progress, path, args), common.spec_overrides(args))
        result = evaluate_targets(found, loaded, spec, data, batch_size, top, ui.progress)
        if json_out:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        else:
            render_eval(ui, result)

    run_guarded(ui, body)


def debug(
    artifact: Annotated[Path, typer.Argument(help="ONNX artifact to compare layer by layer (fp32, fp16 or int8 QDQ).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The PyTorch reference.")],
    images: Annotated[
        Optional[str],
        typer.Option(
            "--images", help="Inputs: image folder, .npy/.npz of normalized inputs, or 'digits' (default: seeded random inputs)."
        ),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="How many inputs to run.")] = 16,
    precision: Annotated[
        Optional[str],
        typer.Option("--precision", help="Rule each layer is judged by: fp32, fp16 or int8 (default: the artifact's)."),
    ] = None,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write error against depth (PNG).")] = None,
    arch: Arch = None,
    arch_kwargs: ArchKwargs = None,
    trust_pickle: TrustPickle = False,
    weights: Weights = "model",
    outputs: Outputs = None,
    task: Task = None,
    input_shape: InputShape = None,
    mean: Mean = None,
    std: Std = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Per-layer error of an artifact against PyTorch, in the model's module names; names the first divergent layer.

    Exit 1 when a layer exceeds the rule (0 when none does).
    """
    args = dict(locals())
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.errors import BadInputError
        from exporter.rescue.debug import explain as explain_layers
        from exporter.rescue.debug import inputs_for, plot, precision_of, render
        from exporter.verify import TOLERANCES, tolerance_for

        if samples < 1:
            raise BadInputError("--samples must be at least 1")
        if artifact.suffix.lower() != ".onnx":
            raise BadInputError(
                f"cnnexport debug compares ONNX models layer by layer; {artifact.name} is not one (other kinds: cnnexport verify)"
            )
        if not artifact.is_file():
            raise BadInputError(f"artifact {artifact} does not exist")
        if precision is not None and precision not in TOLERANCES:
            raise BadInputError(f"--precision must be one of {', '.join(TOLERANCES)}")
        loaded = common.load(ui.progress, checkpoint, args, artifact if artifact.suffix == ".onnx" else None)
        rule = precision or precision_of(artifact)
        batch = inputs_for(images, loaded.spec, samples)
        ui.progress(f"comparing {artifact.name} with PyTorch layer by layer on {len(batch)} input(s), {rule} rule")
        result = explain_layers(artifact, loaded.module, batch, rule, tolerance_for(rule))
        if plot_path:
            result["plot"] = str(plot(result, plot_path))
        if json_out:
            ui.json(result)
        else:
            render(result, ui.out)
        if result["first_divergent"] is not None:
            raise typer.Exit(EXIT_VERIFICATION_FAILED)

    run_guarded(ui, body)


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(inspect)
    app.command(cls=Command)(verify)
    app.command(cls=Command)(bench)
    app.command(name="eval", cls=Command)(eval_)
    app.command(cls=Command)(debug)
