"""The verbs that make one artifact kind, one per verb of the stage table, in table order.

A verb is made from its row: the row's options model (exporter/targets/<target>/row.py) gives
its flags, the shared ones follow, and the row's ``flag_help`` / ``without_flags`` adjust them;
a row naming a ``command`` registers its own (`quantize`, in front of three ONNX rows). The
body parses the flags, calls exporter.build once and prints the report.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter import kinds
from exporter import options as o
from exporter.cli import common
from exporter.cli.params import LOAD, SPEC, UI, VERIFY, Output, Reference, argument, command, param, stage_params, values_for
from exporter.cli.ui import Ui, finish, render_eval, run_guarded

CALIBRATION = stage_params(o.DataOptions, rename={"data": "calib"})
CALIB_RENAME = {"data": "calib"}
EVAL = Annotated[
    Optional[str], typer.Option("--eval", help="Labelled data (ImageFolder, .npz with labels, or 'digits') for top-1/top-5.")
]


def register(app: typer.Typer) -> None:
    """Every row's verb, in table order: the first row of a verb makes it (or registers its own ``command``)."""
    for verb in dict.fromkeys(row.verb for row in kinds.KINDS):
        row = next(row for row in kinds.KINDS if row.verb == verb)
        if row.command:
            kinds.resolve(row.command)(app)
        else:
            row_command(app, row)


def row_command(app: typer.Typer, row: kinds.ArtifactKind) -> None:
    """A verb made from its row: the source argument, data flags, -o, its options, the shared flags, export_row."""
    data = [*CALIBRATION, param("eval_data", EVAL, None)] if row.reads_data else []
    if row.source == "checkpoint":
        params = [argument("checkpoint", Path, "Checkpoint to export."), *data]
    else:
        params = [
            argument("model", Path, "ONNX model, or a checkpoint (exported to ONNX first)."),
            *data,
            param("checkpoint", Reference, None),
        ]
    params += [param("output", Output, None), *stage_params(row.options), *LOAD, *SPEC, *VERIFY, *UI]
    params = [_with_help(p, row.flag_help.get(p.name)) for p in params if p.name not in row.without_flags]
    source_key = "checkpoint" if row.source == "checkpoint" else "model"
    command(app, row.verb, params, row.help or f"Make a {row.kind} artifact, then verify it against the checkpoint.")(
        lambda a: export_row(a, row, source_key)
    )


def _with_help(parameter: inspect.Parameter, text: str | None) -> inspect.Parameter:
    """The parameter with its Typer help replaced by the row's own words."""
    if not text:
        return parameter
    info = copy.copy(parameter.annotation.__metadata__[0])  # shared by every verb: changed on a copy
    info.help = text
    return parameter.replace(annotation=Annotated[parameter.annotation.__origin__, info])


def export_row(a: dict, row: kinds.ArtifactKind, source_key: str) -> None:
    """Build ``row`` from the verb's parsed flags ``a`` (the source under ``source_key``) and print what came out."""
    ui = Ui(a["json_out"], a["quiet"], a["verbose"], a.get("junit"), f"cnnexport {row.verb}")

    def body():
        from exporter import build
        from exporter.runners import artifact_spec

        source = a[source_key]
        ui.refuse_junit_on(("the source model", source), *common.reads(a), ("the calibration data", a.get("calib")))
        calibration = o.validate_model(o.DataOptions, values_for(o.DataOptions, a, CALIB_RENAME)) if "calib" in a else None
        req = build.request(
            row,
            source,
            row.parse(values_for(row.options, a), cli=True),
            output=a["output"],
            verify=common.verify_options(a),
            calibration=calibration,
            evaluation=a.get("eval_data"),
            keep_failed=a["keep_failed"],
            progress=ui.progress,
            reads=common.reads(a),
        )  # bad options: exit 2 before any work
        reference = a.get("checkpoint") if source_key == "model" else None
        if row.source == "checkpoint" or source.suffix.lower() != ".onnx":
            req.loaded = common.load(ui.progress, source, a)
        elif reference is not None:
            # the spec stored in the ONNX wins over the checkpoint's defaults; flags override it (issue 43)
            req.loaded = common.load(ui.progress, reference, a, source)
        results = build.run(req)
        finish(ui, results, req.loaded, None if req.loaded else artifact_spec(source))
        last = results[-1]
        if not ui.json_out and "eval" in last.details:
            render_eval(ui, last.details["eval"])
        for line in [] if ui.json_out else last.details.get("next_steps", []):  # what the stage says to do or know next
            ui.progress(line)

    run_guarded(ui, body)
