"""`cnnexport quantize`: one verb in front of three rows (int8, int8_tensorrt, fp16), picked by --precision and --target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.targets.onnx.row import Fp16Options, Int8Options, QuantizeChoice, quantize_row


def register(app: typer.Typer) -> None:
    # the CLI's pieces are imported here: importing exporter.cli registers every verb, this one included
    from exporter.cli.export import CALIBRATION, EVAL
    from exporter.cli.params import LOAD, SPEC, UI, VERIFY, Output, argument, command, param, stage_params

    int8_reference = Annotated[
        Optional[Path], typer.Option("--checkpoint", help="PyTorch reference when MODEL is ONNX (default: the fp32 ONNX).")
    ]
    command(
        app,
        "quantize",
        [
            argument("model", Path, "ONNX model, or a checkpoint (exported to ONNX first)."),
            *stage_params(QuantizeChoice),
            *CALIBRATION,
            *stage_params(Int8Options),
            *stage_params(Fp16Options),
            param("eval_data", EVAL, None),
            param("checkpoint", int8_reference, None),
            param("output", Output, None),
            *LOAD,
            *SPEC,
            *VERIFY,
            *UI,
        ],
        "Static INT8 (CPU or TensorRT flavour) or FP16 ONNX, verified and optionally evaluated.",
    )(_quantize)


def _quantize(a: dict) -> None:
    from exporter.cli.export import export_row

    choice = QuantizeChoice(precision=a["precision"].value, target=a["target"].value)
    export_row(a, quantize_row(choice.precision, choice.target), "model")
