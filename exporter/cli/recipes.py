"""The verbs around whole runs and the registry: architectures, recipes, run, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from exporter.cli.params import Command, JsonOut, Junit, Quiet, Verbose
from exporter.cli.ui import Ui, fail, run_guarded
from exporter.errors import EXIT_VERIFICATION_FAILED


def architectures(
    json_out: JsonOut = False,
    source: Annotated[
        Optional[str],
        typer.Option(
            "--source",
            help="Only 'classic', 'torchvision' or 'timm' entries (timm's ~1,400 need `pip install 'cnnexport\\[timm]'`).",
        ),
    ] = None,
) -> None:
    """List the architecture registry with each entry's default input spec (timm's with --source timm)."""
    ui = Ui(json_out)

    def body():
        from exporter import architectures as registry
        from exporter.errors import BackendUnavailable, BadInputError

        if source not in (None, "classic", "torchvision", "timm"):
            raise BadInputError(f"--source must be classic, torchvision or timm, not {source!r}")
        if source == "timm" and not registry.timm_available():
            from exporter.architectures.timm_models import INSTALL_HINT

            raise BackendUnavailable(f"timm is not installed: {INSTALL_HINT}")
        rows = registry.entries(source=source)
        if json_out:
            data = [
                {
                    "name": e.name,
                    "source": e.source,
                    "num_classes": e.num_classes,
                    "input_shape": [e.channels, e.height, e.width],
                    "mean": list(e.mean),
                    "std": list(e.std),
                    "interpolation": e.interpolation,
                    "crop_pct": e.crop_pct,
                    "task": e.task,
                    "description": e.description,
                }
                for e in rows
            ]
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            return
        from rich.table import Table

        table = Table(title=f"{len(rows)} architectures", title_justify="left")
        for col in ("name", "source", "task", "classes", "input", "mean", "std"):
            table.add_column(col)
        for e in rows:
            table.add_row(
                e.name,
                e.source,
                e.task,
                str(e.num_classes),
                f"{e.channels}x{e.height}x{e.width}",
                ",".join(f"{m:g}" for m in e.mean),
                ",".join(f"{s:g}" for s in e.std),
            )
        ui.out.print(table)
        if source is None:
            ui.out.print(
                "timm's models: `cnnexport architectures --source timm`"
                + ("" if registry.timm_available() else " (after pip install 'cnnexport[timm]')")
            )

    run_guarded(ui, body)


def recipes(json_out: JsonOut = False) -> None:
    """List the shipped recipes (use one with `cnnexport run --recipe NAME`)."""
    ui = Ui(json_out)

    def body():
        from exporter import recipe as recipe_mod

        rows = []
        for name, path in recipe_mod.shipped().items():
            r = recipe_mod.load(path)
            rows.append(
                {"name": name, "path": str(path), "description": r.description, "stages": [n for n, s in r.stages if s.enabled]}
            )
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


# `run`'s flags, named here so that the command itself reads as: parse, call exporter.run_command, print.
RecipeName = Annotated[
    str, typer.Option("--recipe", "-r", help="Recipe YAML, or the name of a shipped one (see `cnnexport recipes`).")
]
RunCheckpoints = Annotated[
    Optional[list[Path]],
    typer.Argument(
        help="Checkpoint(s) to build every artifact from. More than one (or --from / --glob) is a fleet: "
        "one folder each under -o, plus fleet.json and fleet.md.",
        show_default=False,
    ),
]
RunOutput = Annotated[
    Optional[Path],
    typer.Option("-o", "--output", help="Output folder (default: dist/<checkpoint name>/; a fleet: dist/fleet/)."),
]
SetKeys = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a recipe key: stages.coreml.precision=fp32 (repeatable).")
]
RunCalib = Annotated[
    Optional[str],
    typer.Option(
        "--calib",
        help="Calibration data for the INT8 stages (image folder, .npy/.npz); the same as --set calibration.data=...",
    ),
]
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Independent stages run in parallel.")]
FromList = Annotated[
    Optional[Path], typer.Option("--from", help="A fleet: a text file listing checkpoints, one per line (# comments).")
]
GlobPattern = Annotated[
    Optional[str], typer.Option("--glob", help="A fleet: the checkpoints matching a pattern, e.g. 'ckpts/**/*.pt'.")
]
Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where a fleet runs: local (one checkpoint after another, here), ray (Ray tasks on the cluster in "
        "--ray-address / RAY_ADDRESS, else on a local Ray instance), auto (ray for more than one checkpoint "
        "where Ray is installed, else local).",
    ),
]
RayAddress = Annotated[
    Optional[str], typer.Option("--ray-address", help="A Ray cluster to run the fleet on (default: RAY_ADDRESS).")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan; run nothing.")]


def run(
    recipe: RecipeName,
    checkpoints: RunCheckpoints = None,
    output: RunOutput = None,
    set_: SetKeys = None,
    calib: RunCalib = None,
    jobs: Jobs = 1,
    from_list: FromList = None,
    glob_: GlobPattern = None,
    engine: Engine = "auto",
    ray_address: RayAddress = None,
    dry_run: DryRun = False,
    sign_key: Annotated[
        Optional[Path],
        typer.Option(
            "--sign-key",
            help="EC private key (PEM): once every stage passed, sign the run folder as `cnnexport sign` does "
            "(verification.intoto.json + model.sig).",
        ),
    ] = None,
    junit: Junit = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run a recipe: every stage it enables, cached, resumable, with manifest.json and report.md.

    Given many checkpoints (a fleet) each gets its own folder under -o; one checkpoint's failure never
    stops the others, and the exit code says whether all passed.
    """
    ui = Ui(json_out, quiet, verbose, junit, f"cnnexport run {recipe}")

    def body():
        from exporter.release.ci import rows_of_fleet, rows_of_run
        from exporter.run_command import RunRequest, run_command

        ui.refuse_junit_on(
            *(("a checkpoint", c) for c in checkpoints or []), ("the recipe", Path(recipe)), ("the --from list", from_list)
        )

        request = RunRequest(
            recipe,
            list(checkpoints or []),
            output,
            overrides=list(set_ or []),
            calib=calib,
            jobs=jobs,
            from_list=from_list,
            pattern=glob_,
            engine=engine,
            ray_address=ray_address,
            dry_run=dry_run,
            sign_key=sign_key,
        )
        outcome = run_command(request, ui.progress, ui.progress if verbose else None)
        if outcome.plan is not None:
            _print_plan(ui, outcome.plan)
        elif outcome.fleet is not None:
            _print_fleet(ui, outcome.fleet)
            ui.publish(rows_of_fleet(outcome.fleet))
        elif outcome.run is not None:
            _print_run(ui, outcome.run)
            ui.publish(rows_of_run(outcome.run))
        for signed in outcome.signed:
            ui.progress(f"signed {signed['folder']}: {signed['statement']} and {signed['signature']} ({signed['result']})")
        if outcome.error is not None:
            fail(ui, *outcome.error)

    run_guarded(ui, body)


def _print_plan(ui: Ui, plan) -> None:
    """--dry-run: the plan as JSON, or a line per stage (per checkpoint, for a fleet)."""
    if ui.json_out:
        fleet = {"fleet": plan.fleet} if plan.fleet is not None else {}
        sys.stdout.write(
            json.dumps({"recipe": plan.recipe, "output": str(plan.out_dir), **fleet, "plan": plan.stages}, indent=2) + "\n"
        )
    elif plan.fleet is None:
        ui.out.print(f"recipe {escape(plan.recipe)} -> {escape(str(plan.out_dir))} (nothing is run)")
        for row in plan.stages:
            ui.out.print(f"  {row['stage']:<14} <- {escape(row['input'])}  {escape(json.dumps(row['options']))}")
    else:
        ui.out.print(
            f"recipe {escape(plan.recipe)}: {len(plan.fleet)} checkpoints -> {escape(str(plan.out_dir))} (nothing is run)"
        )
        for row in plan.fleet:
            ui.out.print(f"  {escape(row['checkpoint'])} -> {escape(row['folder'])}")


def _print_fleet(ui: Ui, result) -> None:
    """A fleet's fleet.json on stdout (--json), else its table."""
    if ui.json_out:
        sys.stdout.write(json.dumps(result.manifest, indent=2, sort_keys=True) + "\n")
    else:
        _render_fleet(ui, result)


def _print_run(ui: Ui, result) -> None:
    """One checkpoint's manifest, stage timings and bench as JSON (--json), else its table."""
    if ui.json_out:
        timings = {o.name: {"seconds": round(o.seconds, 3), "cached": o.cached} for o in result.outcomes}
        sys.stdout.write(json.dumps({"manifest": result.manifest, "timings": timings, "bench": result.bench}, indent=2) + "\n")
    else:
        _render_run(ui, result)


def _render_fleet(ui: Ui, result) -> None:
    from rich.table import Table

    s = result.manifest["summary"]
    table = Table(
        title=f"cnnexport run: {s['checkpoints']} checkpoints -> {escape(str(result.out_dir))} "
        f"({result.engine}, {result.seconds:.1f}s)",
        title_justify="left",
    )
    for col in ("checkpoint", "folder", "status", "stages passed", "time", "problem"):
        table.add_column(col, overflow="fold")
    for row in result.rows:
        stages = row.get("stages", {})
        colour = "green" if row["status"] == "pass" else "red"
        table.add_row(
            escape(Path(row["checkpoint"]).name),
            escape(row["folder"]),
            f"[{colour}]{row['status']}[/{colour}]",
            f"{sum(v['status'] == 'pass' for v in stages.values())}/{len(stages)}",
            f"{row.get('seconds', 0):.1f}s",
            escape(row.get("error", "")),
        )
    ui.out.print(table)
    ui.progress(f"wrote {result.out_dir / 'fleet.json'} and {result.out_dir / 'fleet.md'}")


def files_cell(paths: list[str]) -> str:
    """A stage's files for the table: top-level ones by name, a folder's (a TensorRT kit) as 'folder/ (N files)'."""
    shown: dict[str, int] = {}
    for path in paths:
        parts = Path(path).parts
        key = f"{parts[0]}/" if len(parts) > 1 else parts[0] if parts else ""
        shown[key] = shown.get(key, 0) + 1
    return ", ".join(f"{name} ({count} files)" if name.endswith("/") else name for name, count in shown.items() if name)


def _render_run(ui: Ui, result) -> None:
    from rich.table import Table

    table = Table(title=f"cnnexport run -> {escape(str(result.out_dir))} ({result.seconds:.1f}s)", title_justify="left")
    from exporter.report import agreement_text, worst_error

    for col in ("stage", "artifact", "status", "max err/range", "cosine", "agreement", "time", "cached"):
        table.add_column(col, overflow="fold")
    for o in result.outcomes:
        v = o.entry.get("verification", {}) if o.entry else {}
        colour = "green" if o.status == "pass" else "red" if o.status == "fail" or o.status.startswith("error") else "yellow"
        files = files_cell([f["path"] for f in o.entry.get("files", [])]) if o.entry else "-"
        table.add_row(
            o.name,
            escape(files or "-"),
            f"[{colour}]{escape(o.status)}[/{colour}]",
            "-" if worst_error(v) is None else f"{worst_error(v):.2e}",
            "-" if v.get("cosine") is None else f"{v['cosine']:.6f}",
            agreement_text(v),
            f"{o.seconds:.1f}s",
            "yes" if o.cached else "no",
        )
    ui.out.print(table)
    if result.bench is not None:
        from exporter.measure.bench import render
        from exporter.measure.recommend import describe

        render(result.bench, ui.out)
        ui.out.print(f"[bold]{escape(describe(result.bench['recommended']))}[/bold]")
    ui.progress(f"wrote {result.out_dir / 'manifest.json'} and {result.out_dir / 'report.md'}")


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the checkpoint, artifacts and reports.")] = Path(
        "cnnexport-demo"
    ),
    epochs: Annotated[
        Optional[int],
        typer.Option("--epochs", min=1, help="Training epochs (default: 12 on the digits, 20 on the shapes, 15 for the YOLO)."),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="classify: LeNet-5 on scikit-learn's digits; segment: a tiny U-Net on generated shapes; "
            "detect: a YOLO11n trained by Ultralytics on drawn shapes (the ultralytics extra).",
        ),
    ] = "classify",
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train a real model on real data, export every artifact, verify each, compare held-out accuracy.

    --task classify (default): LeNet-5 on scikit-learn's digits, top-1 per artifact. --task segment: a tiny
    U-Net on generated shapes, mIoU per artifact. --task detect (the ultralytics extra): a YOLO11n trained
    by Ultralytics on drawn shapes, matched boxes and mAP per artifact."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        import importlib

        from exporter import tasks
        from exporter.errors import BadInputError

        modules = tasks.demos()
        if task not in modules:
            *first, last = modules
            raise BadInputError(f"--task must be {', '.join(first)} or {last}, not {task!r}")
        demo_module = importlib.import_module(modules[task])
        report = demo_module.run_demo(output, progress=ui.progress, **({"epochs": epochs} if epochs else {}))
        ui.emit(report)
        if not json_out:
            demo_module.render_accuracy(report, ui.out)
        if any(a["verification"]["status"] == "fail" for a in report["artifacts"]):
            fail(ui, "the demo produced an artifact that failed verification", EXIT_VERIFICATION_FAILED)

    run_guarded(ui, body)


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(architectures)
    app.command(cls=Command)(recipes)
    app.command(cls=Command)(run)
    app.command(cls=Command)(demo)
