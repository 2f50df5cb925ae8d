"""The ONNX family's rows: onnx, simplify, int8, int8_tensorrt and fp16, one Format (onnxruntime) for all."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal, Optional

from pydantic import ValidationInfo, field_validator

from exporter import rows
from exporter.options import FALLBACK_HELP, Int8Rescue, Method, Names, Strict, opt
from exporter.targets import always, fixed_precision
from exporter.targets.tensorrt.version import DEFAULT_VERSION as DEFAULT_TRT_VERSION

ORDER = 20

ONNX_INPUTS = ("simplify", "onnx")  # the recipe stages an ONNX-sourced stage reads from, in order of preference
ONNX_RUNTIME = ("onnx", "onnxruntime")  # reads and runs the ONNX every ONNX-based stage starts from


def opset_range(exporter: str) -> tuple[int, int]:
    """The opsets the installed exporter writes as asked (measured: dynamo turns anything else into 18, silently)."""
    import onnx.defs
    from torch.onnx import _constants

    if exporter == "legacy":
        return _constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET
    return 18, onnx.defs.onnx_opset_version()


class OnnxOptions(Strict):
    exporter: Literal["dynamo", "legacy"] = opt("dynamo", "dynamo (torch.export based) or legacy (TorchScript based).")
    opset: Optional[int] = opt(None, "ONNX opset (default: the exporter's; dynamo writes 18 and later, legacy 7 to 23).")
    input_name: str = opt("input", "Name of the graph input.")
    output_name: str = opt(
        "logits",
        "Name of the graph output of a one-output model "
        "(a multi-output model's outputs are named by their path in what forward returns).",
    )
    consumer_files: bool = opt(
        False,
        "Also write MODEL.onnx.json (the input spec as JSON) and MODEL.onnx.labels.txt (a class name per line, "
        "Triton's label_filename) beside the model.",
    )

    @field_validator("opset")
    @classmethod
    def _opset_supported(cls, value, info: ValidationInfo):
        if value is None:
            return value
        exporter = info.data.get("exporter", "dynamo")
        low, high = opset_range(exporter)
        if not low <= value <= high:
            hint = (
                "; opsets below 18 need the legacy exporter (--exporter legacy, or exporter: legacy in a recipe)"
                if exporter == "dynamo" and value < low
                else ""
            )
            raise ValueError(f"opset {value} is outside what the installed {exporter} exporter writes ({low} to {high}){hint}")
        return value


class SimplifyOptions(Strict):
    """onnxsim has nothing to choose: it folds constants and removes dead nodes."""


class Int8Settings(Strict):
    """How the int8 rows quantize; Int8Options adds the rescue after them."""

    method: Method = opt("minmax", "Calibration method.")
    per_channel: bool = opt(True, "Per-channel weight scales.", flag="--per-channel/--per-tensor")
    exclude: Annotated[list[str], Names] = opt([], "Node name or op type to keep in float (repeatable).")
    trt_version: str = opt(DEFAULT_TRT_VERSION, "TensorRT version written in the calibration cache header.")
    equalize: bool = opt(
        False,
        "int8: cross-layer equalization of consecutive Conv(-ReLU)-Conv pairs before quantizing "
        "(Nagel et al. 2019); the fp32 function is checked unchanged first.",
    )


class Int8Options(Int8Rescue, Int8Settings):
    fallback: Literal["none", "auto", "greedy"] = opt(  # type: ignore[assignment]  # ONNX also keeps the greedy search
        "none",
        FALLBACK_HELP + " greedy: each round the first divergent layer instead (the search before ranking).",
    )
    max_drop: Optional[float] = opt(
        None, "With --fallback auto and --eval: the most top-1 points the labelled data may lose.", ge=0, le=100
    )


class Fp16Options(Strict):
    keep_io_types: bool = opt(True, "fp16: keep fp32 inputs/outputs.", flag="--keep-io-types/--fp16-io")
    overflow: Literal["keep", "fail", "ignore"] = opt(
        "keep",
        "fp16: values beyond ±65504 (and factors below fp16's normal range) -> keep those nodes fp32, fail, or ignore.",
        flag="--fp16-overflow",
    )


class QuantizeChoice(Strict):
    """`cnnexport quantize` builds one of three rows (int8, int8_tensorrt, fp16); these two flags pick it."""

    precision: Literal["int8", "fp16"] = opt("int8", "int8 (static, calibrated) or fp16.")
    target: Literal["cpu", "tensorrt"] = opt(
        "cpu", "int8 flavour: cpu (uint8 act/int8 weights) or tensorrt (symmetric + calibration cache)."
    )


def quantize_row(precision: str, target: str) -> rows.ArtifactKind:
    """`cnnexport quantize --precision P --target T` -> its row."""
    from exporter import kinds

    return kinds.get("fp16" if precision == "fp16" else "int8_tensorrt" if target == "tensorrt" else "int8")


FORMAT = rows.Format(
    "onnx",
    "exporter.targets.onnx.runner:open_artifact",
    (".onnx",),
    bench_devices=("cpu", "cuda"),
    describe=".onnx",
    also_runs_on=("openvino",),
    layers=True,
    companion_suffixes=(".data",),
    checks="exporter.targets.onnx.checks:onnx_checks",
    runtime="onnxruntime",
)

ONNX = rows.ArtifactKind(
    name="onnx",
    kind="onnx",
    verb="onnx",
    suffix=".onnx",
    source="checkpoint",
    options=OnnxOptions,
    stage="exporter.targets.onnx.stage:make",
    build="exporter.build:from_checkpoint",
    format=FORMAT,
    precision=fixed_precision("fp32"),
    traces=True,
    recipe_enabled=True,
    help="Export ONNX with a dynamic batch axis, then verify it against the checkpoint.",
    packages=("onnxscript", *ONNX_RUNTIME),
)
SIMPLIFY = rows.ArtifactKind(
    name="simplify",
    kind="simplify",
    verb="simplify",
    suffix=".sim.onnx",
    source="onnx",
    options=SimplifyOptions,
    stage="exporter.targets.onnx.simplify:make",
    build="exporter.build:from_onnx",
    format=FORMAT,
    precision=fixed_precision("fp32"),
    needs=("onnx",),
    checks_source=True,
    packages=(*ONNX_RUNTIME, "onnxsim"),
    help="Simplify an ONNX model (onnxsim); verify against the original and, with --checkpoint, PyTorch.",
    flag_help={"model": "ONNX model to simplify with onnxsim.", "checkpoint": "Also verify against this checkpoint."},
    without_flags=("input_shape", "mean", "std", "labels"),
)
INT8 = rows.ArtifactKind(
    name="int8",
    kind="int8-cpu",
    verb="quantize",
    suffix=".int8.onnx",
    source="onnx",
    options=Int8Options,
    stage="exporter.targets.onnx.quantize:make",
    build="exporter.targets.onnx.flow:quantize",
    rescue="exporter.targets.onnx.rescue:target",
    format=FORMAT,
    precision=fixed_precision("int8"),
    calibrates=always,
    reads_data=True,
    needs=ONNX_INPUTS,
    packages=ONNX_RUNTIME,
    command="exporter.targets.onnx.verb:register",
)
# the TensorRT flavour: symmetric Q/DQ + calibration cache, for an engine (not a CPU artifact: no bench)
INT8_TENSORRT = replace(
    INT8,
    name="int8_tensorrt",
    kind="int8-tensorrt",
    suffix=".int8-trt.onnx",
    stage="exporter.targets.onnx.quantize:make_tensorrt",
    bench=None,
    command="",
)
FP16 = rows.ArtifactKind(
    name="fp16",
    kind="fp16",
    verb="quantize",
    suffix=".fp16.onnx",
    source="onnx",
    options=Fp16Options,
    stage="exporter.targets.onnx.fp16:make",
    build="exporter.build:from_onnx",
    format=FORMAT,
    precision=fixed_precision("fp16"),
    reads_data=True,
    needs=ONNX_INPUTS,
    packages=ONNX_RUNTIME,
)
ROWS = [ONNX, SIMPLIFY, INT8, INT8_TENSORRT, FP16]
