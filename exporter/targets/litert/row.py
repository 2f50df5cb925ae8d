"""The litert row of the stage table: its options model, its format and the row (registered by exporter/kinds.py)."""

from __future__ import annotations

from typing import Literal

from exporter import kinds
from exporter.options import Strict, opt


class LiteRTOptions(Strict):
    precision: Literal["fp32", "fp16", "int8"] = opt(
        "fp32",
        "fp32; fp16 (weights stored in fp16, judged by the fp16 rule); or int8 (static int8 weights and activations "
        "with ai-edge-quantizer, needs --calib; judged by the int8 rule).",
    )
    layout: Literal["nchw", "nhwc"] = opt(
        "nchw", "Input (and 4-D output) layout: nhwc is what Android camera pipelines feed; the graph is the same."
    )


def _precision(options: LiteRTOptions) -> str:
    return options.precision


def _calibrates(options: LiteRTOptions) -> bool:
    return options.precision == "int8"


FORMAT = kinds.Format("litert", "exporter.targets.litert.runner:open_artifact", (".tflite",), describe=".tflite")

ROW = kinds.ArtifactKind(
    name="litert",
    kind="litert",
    verb="litert",
    suffix=".tflite",
    source="checkpoint",
    options=LiteRTOptions,
    stage="exporter.targets.litert.stage:make",
    build="exporter.build:from_checkpoint",
    format=FORMAT,
    precision=_precision,
    calibrates=_calibrates,
    reads_data=True,
    traces=True,
    check="exporter.targets.litert.stage:check_options",
    suffixes={"fp16": ".fp16.tflite", "int8": ".int8.tflite"},
    packages=("ai-edge-litert", "ai-edge-quantizer"),
    help="LiteRT model (.tflite) for Android, converted by litert-torch; verified by the LiteRT interpreter.",
)
