"""The litert rows of the stage table: float (its --precision picks fp16 or int8 too) and int8, one recipe stage each.

Two rows so that one recipe makes both models (stages.litert and stages.litert_int8), as the
ONNX rows int8 and fp16 do; the verb is made from the first row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from exporter import rows
from exporter.options import Int8Rescue, Names, Strict, opt
from exporter.targets import calibrates_when_int8, options_precision

ORDER = 70


class LiteRTSettings(Strict):
    layout: Literal["nchw", "nhwc"] = opt(
        "nchw", "Input (and 4-D output) layout: nhwc is what Android camera pipelines feed; the graph is the same."
    )
    exclude: Annotated[list[str], Names] = opt(
        [], "int8: module name (features.3) whose ops, with the ones feeding them, stay float (repeatable)."
    )
    equalize: bool = opt(
        False,
        "int8: cross-layer equalization of the model's Conv(-BatchNorm)-ReLU-Conv pairs before quantizing "
        "(as `quantize --equalize`); the fp32 function is checked unchanged first.",
    )


class LiteRTBuild(Int8Rescue, LiteRTSettings):
    """The model's settings, then the int8 rescue's."""


class LiteRTOptions(LiteRTBuild):
    precision: Literal["fp32", "fp16", "int8"] = opt(
        "fp32",
        "fp32; fp16 (weights stored in fp16, judged by the fp16 rule); or int8 (static int8 weights and activations "
        "with ai-edge-quantizer, needs --calib; judged by the int8 rule).",
    )


class LiteRTInt8Options(LiteRTBuild):
    """The litert_int8 recipe stage: always int8."""

    @property
    def precision(self) -> str:
        return "int8"


FORMAT = rows.Format("litert", "exporter.targets.litert.runner:open_artifact", (".tflite",), describe=".tflite")

ROW = rows.ArtifactKind(
    name="litert",
    kind="litert",
    verb="litert",
    suffix=".tflite",
    source="checkpoint",
    options=LiteRTOptions,
    stage="exporter.targets.litert.stage:make",
    build="exporter.rescue.flow:build_from_checkpoint",
    rescue="exporter.targets.litert.rescue:target",
    format=FORMAT,
    precision=options_precision,
    calibrates=calibrates_when_int8,
    reads_data=True,
    traces=True,
    check="exporter.targets.litert.stage:check_options",
    suffixes={"fp16": ".fp16.tflite", "int8": ".int8.tflite"},
    packages=("ai-edge-litert", "ai-edge-quantizer"),
    help="LiteRT model (.tflite) for Android, converted by litert-torch; verified by the LiteRT interpreter.",
)
INT8_ROW = replace(
    ROW, name="litert_int8", kind="litert-int8", suffix=".int8.tflite", options=LiteRTInt8Options, suffixes={}, help=""
)
ROWS = [ROW, INT8_ROW]
