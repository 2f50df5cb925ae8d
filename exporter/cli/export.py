"""The verbs that make one artifact kind: onnx, torchscript, coreml, simplify, quantize, tensorrt, openvino.

Each verb's flags are its options model's fields (exporter/options.py) plus the shared ones;
its body parses them, calls exporter.build once and prints the report.
"""

from __future__ import annotations

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
Eval = Annotated[
    Optional[str], typer.Option("--eval", help="Labelled data (ImageFolder, .npz with labels, or 'digits') for top-1/top-5.")
]


def register(app: typer.Typer) -> None:
    """Every row's verb, in table order: a row whose verb has no hand-made command here gets one from the row."""
    custom = {
        "coreml": _coreml,
        "simplify": _simplify,
        "quantize": _quantize_command,
        "tensorrt": _tensorrt,
        "openvino": _openvino,
    }
    for verb in dict.fromkeys(row.verb for row in kinds.KINDS):
        if verb in custom:
            custom[verb](app)
        else:
            row_command(app, next(row for row in kinds.KINDS if row.verb == verb))


def row_command(app: typer.Typer, row: kinds.ArtifactKind) -> None:
    """A verb made from its row alone (onnx, torchscript, a plug-in's target): its options, the shared flags, _export."""
    data = [*CALIBRATION, param("eval_data", Eval, None)] if row.reads_data else []
    if row.source == "checkpoint":
        params = [argument("checkpoint", Path, "Checkpoint to export."), *data]
    else:
        params = [
            argument("model", Path, "ONNX model, or a checkpoint (exported to ONNX first)."),
            *data,
            param("checkpoint", Reference, None),
        ]
    params += [param("output", Output, None), *stage_params(row.options), *LOAD, *SPEC, *VERIFY, *UI]
    source_key = "checkpoint" if row.source == "checkpoint" else "model"
    command(app, row.verb, params, row.help or f"Make a {row.kind} artifact, then verify it against the checkpoint.")(
        lambda a: _export(a, row, source_key)
    )


ONNX_MODEL = ("model", "ONNX model, or a checkpoint (exported to ONNX first).")


def _coreml(app: typer.Typer) -> None:
    coreml_output = Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Output .mlpackage (default: beside the checkpoint).")
    ]
    command(
        app,
        "coreml",
        [
            argument("checkpoint", Path, "Checkpoint to convert."),
            param("output", coreml_output, None),
            *stage_params(o.CoreMLOptions),
            *LOAD,
            *SPEC,
            *VERIFY,
            *UI,
        ],
        "Convert to a Core ML ML program (.mlpackage); verify it on Linux with the MIL interpreter.\n\n"
        "Tolerances: fp32/fp16 programs use the fp32/fp16 pass rule, a compressed program the int8 rule. "
        "Verification batch sizes are clipped into --batch.",
    )(lambda a: _export(a, kinds.get("coreml"), "checkpoint"))


def _simplify(app: typer.Typer) -> None:
    also = Annotated[Optional[Path], typer.Option("--checkpoint", help="Also verify against this checkpoint.")]
    command(
        app,
        "simplify",
        [
            argument("model", Path, "ONNX model to simplify with onnxsim."),
            param("output", Output, None),
            param("checkpoint", also, None),
            *LOAD,
            *VERIFY,
            *UI,
        ],
        "Simplify an ONNX model (onnxsim); verify against the original and, with --checkpoint, PyTorch.",
    )(lambda a: _export(a, kinds.get("simplify"), "model"))


def _quantize_command(app: typer.Typer) -> None:
    int8_reference = Annotated[
        Optional[Path], typer.Option("--checkpoint", help="PyTorch reference when MODEL is ONNX (default: the fp32 ONNX).")
    ]
    command(
        app,
        "quantize",
        [
            argument(*ONNX_MODEL[:1], Path, ONNX_MODEL[1]),
            *stage_params(o.QuantizeChoice),
            *CALIBRATION,
            *stage_params(o.Int8Options),
            *stage_params(o.Fp16Options),
            param("eval_data", Eval, None),
            param("checkpoint", int8_reference, None),
            param("output", Output, None),
            *LOAD,
            *SPEC,
            *VERIFY,
            *UI,
        ],
        "Static INT8 (CPU or TensorRT flavour) or FP16 ONNX, verified and optionally evaluated.",
    )(_quantize)


def _tensorrt(app: typer.Typer) -> None:
    engine = Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Engine file (default: MODEL.engine beside the model).")
    ]
    command(
        app,
        "tensorrt",
        [
            argument(*ONNX_MODEL[:1], Path, ONNX_MODEL[1]),
            *stage_params(o.TensorRTOptions),
            *CALIBRATION,
            param("checkpoint", Reference, None),
            param("output", engine, None),
            *LOAD,
            *SPEC,
            *[p for p in VERIFY if p.name != "batch_sizes"],
            *UI,
        ],
        "TensorRT engine (+ sidecar JSON), verified at the profile's min and max batch; or, with --emit-script, a build kit.",
    )(lambda a: _export(a, kinds.get("tensorrt"), "model"))


def _openvino(app: typer.Typer) -> None:
    xml = Annotated[
        Optional[Path], typer.Option("-o", "--output", help="IR file NAME.xml (weights in NAME.bin; default: beside the model).")
    ]
    command(
        app,
        "openvino",
        [
            argument(*ONNX_MODEL[:1], Path, ONNX_MODEL[1]),
            *stage_params(o.OpenVINOOptions),
            *CALIBRATION,
            param("eval_data", Eval, None),
            param("checkpoint", Reference, None),
            param("output", xml, None),
            *LOAD,
            *SPEC,
            *VERIFY,
            *UI,
        ],
        "OpenVINO IR for CPU servers: fp32, bf16 or int8 (NNCF), verified by OpenVINO with its precision pinned.\n\n"
        "bf16 is judged by the fp16 rule, int8 by the int8 rule on held-out calibration samples.",
    )(lambda a: _export(a, kinds.get("openvino"), "model"))


def _quantize(a: dict) -> None:
    choice = o.QuantizeChoice(precision=a["precision"].value, target=a["target"].value)
    _export(a, kinds.quantize_kind(choice.precision, choice.target), "model")


def _export(a: dict, row: kinds.ArtifactKind, source_key: str) -> None:
    ui = Ui(a["json_out"], a["quiet"], a["verbose"])

    def body():
        from exporter import build
        from exporter.runners import artifact_spec

        source = a[source_key]
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
