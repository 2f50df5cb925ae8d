"""The openvino row of the stage table: an IR from the ONNX, in the precision its options name."""

from __future__ import annotations

from typing import Annotated, Literal

from exporter import rows
from exporter.options import Int8Rescue, Method, Names, Strict, opt
from exporter.targets import calibrates_when_int8
from exporter.targets.onnx.row import ONNX_INPUTS, ONNX_RUNTIME

ORDER = 50


class OpenVINOSettings(Strict):
    precision: Literal["fp32", "bf16", "int8"] = opt(
        "fp32", "fp32, bf16 (the CPU plugin computes in bf16: AMX/AVX-512-BF16 CPUs), or int8 (NNCF, needs --calib)."
    )
    method: Method = opt("minmax", "int8: NNCF's activation range: minmax or percentile (NNCF has no entropy).")
    exclude: Annotated[list[str], Names] = opt(
        [], "int8: op type (Conv, Gemm, … or OpenVINO's) or node name NNCF leaves in float (repeatable)."
    )
    equalize: bool = opt(
        False,
        "int8: cross-layer equalization of the ONNX's Conv(-ReLU)-Conv pairs before conversion "
        "(as `quantize --equalize`); the fp32 function is checked unchanged first.",
    )


class OpenVINOOptions(Int8Rescue, OpenVINOSettings):
    """The IR's settings, then the int8 rescue's."""


def pass_rule(options: OpenVINOOptions) -> str:
    """bf16 is judged by the fp16 rule."""
    return {"fp32": "fp32", "bf16": "fp16", "int8": "int8"}[options.precision]


FORMAT = rows.Format(
    "openvino", "exporter.targets.openvino.runner:open_artifact", (".xml",), describe=".xml", companion_swaps=(".bin",)
)

ROWS = [
    rows.ArtifactKind(
        name="openvino",
        kind="openvino",
        verb="openvino",
        suffix=".xml",
        source="onnx",
        options=OpenVINOOptions,
        stage="exporter.targets.openvino.stage:make",
        build="exporter.rescue.flow:build_from_onnx",
        rescue="exporter.targets.openvino.rescue:target",
        format=FORMAT,
        precision=pass_rule,
        calibrates=calibrates_when_int8,
        reads_data=True,
        needs=ONNX_INPUTS,
        check="exporter.targets.openvino.stage:check_options",
        suffixes={"bf16": ".bf16.xml", "int8": ".int8.xml"},
        packages=(*ONNX_RUNTIME, "openvino", "nncf"),
        help="OpenVINO IR for CPU servers: fp32, bf16 or int8 (NNCF), verified by OpenVINO with its precision pinned.\n\n"
        "bf16 is judged by the fp16 rule, int8 by the int8 rule on held-out calibration samples.",
        flag_help={"output": "IR file NAME.xml (weights in NAME.bin; default: beside the model)."},
    )
]
