"""Every stage option, written once: name, type, choices, default and help.

The CLI verbs (exporter/cli/params.py turns each field into a flag), the recipe schema
(exporter/recipe.py adds ``enabled`` to each model) and ``run``'s stage graph all read these
models; tests/test_stage_table.py fails when they disagree. A field's description is its
``--help`` text; ``flag`` in its extras is the CLI spelling when it is not ``--field-name``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.tensorrt.version import DEFAULT_VERSION as DEFAULT_TRT_VERSION


def _split(pattern: str):
    """A list field that also takes what the CLI flags take: '1,28,28', '0.5 0.5', or one value."""

    def split(value):
        if isinstance(value, str):
            return [p for p in re.split(pattern, value.strip()) if p]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        return value

    return BeforeValidator(split)


Numbers = _split(r"[,\s]+")  # --mean 0.5,0.5,0.5 / --batch-sizes 1,4
Shape = _split(r"[,\sxX]+")  # --input-shape 3,224,224 or 3x224x224
Names = _split(r"\s*,\s*")  # --exclude Conv,node_12


def opt(default: Any = None, help: str = "", flag: str | None = None, **constraints) -> Any:  # noqa: A002 - Typer's word
    """A field with its CLI help (and flag spelling when it is not --field-name)."""
    extra: dict[str, Any] | None = {"flag": flag} if flag else None
    if isinstance(default, list):
        return Field(default_factory=lambda d=default: list(d), description=help, json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Strict(BaseModel):
    """Unknown keys are an error (a recipe typo must not silently do nothing)."""

    model_config = ConfigDict(extra="forbid")


Method = Literal["minmax", "entropy", "percentile"]


class TorchScriptOptions(Strict):
    script: bool = opt(False, "Use torch.jit.script instead of tracing.")


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


class Int8Options(Strict):
    method: Method = opt("minmax", "Calibration method.")
    per_channel: bool = opt(True, "Per-channel weight scales.", flag="--per-channel/--per-tensor")
    exclude: Annotated[list[str], Names] = opt([], "Node name or op type to keep in float (repeatable).")
    trt_version: str = opt(DEFAULT_TRT_VERSION, "TensorRT version written in the calibration cache header.")
    equalize: bool = opt(
        False,
        "int8: cross-layer equalization of consecutive Conv(-ReLU)-Conv pairs before quantizing "
        "(Nagel et al. 2019); the fp32 function is checked unchanged first.",
    )
    fallback: Literal["none", "auto"] = opt(
        "none", "auto: keep the fewest layers in float needed to pass the int8 rule on the held-out split (and --max-drop)."
    )
    max_drop: Optional[float] = opt(
        None, "With --fallback auto and --eval: the most top-1 points the labelled data may lose.", ge=0, le=100
    )
    max_float_layers: Optional[int] = opt(
        None,
        "With --fallback auto: the most weighted layers the model may keep in float (default: the larger of "
        "2 and 25% of its weighted layers).",
        ge=0,
    )
    max_float_share: Optional[float] = opt(
        None,
        "With --fallback auto: the largest share (0-1) of weighted layers the model may keep in float; with "
        "--max-float-layers too, both hold.",
        ge=0,
        le=1,
    )

    @model_validator(mode="after")
    def _fallback_flags_need_fallback(self):
        given = [name for name in ("max_drop", "max_float_layers", "max_float_share") if getattr(self, name) is not None]
        if given and self.fallback != "auto":
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(
                f"{flags} only {'applies' if len(given) == 1 else 'apply'} with --fallback auto (fallback: auto in a recipe)"
            )
        return self


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


class CoreMLOptions(Strict):
    precision: Literal["fp16", "fp32"] = opt("fp16", "Compute precision of the ML program.")
    image_input: bool = opt(False, "Take an image (0..255 pixels) and fold the normalization into the model.")
    classifier: bool = opt(False, "Classifier outputs: classLabel and classLabel_probs (softmax), labels from --labels.")
    batch: str = opt("1:64", "Batch range MIN:MAX, or N for a fixed batch.")
    min_target: Optional[str] = opt(
        None, "Minimum deployment target: iOS15..iOS18, macOS12..macOS15 (default iOS15; iOS16 with --compress)."
    )
    compress: Optional[str] = opt(None, "Weight compression: palettize:N (N bits, k-means LUT) or linear8 (int8 per channel).")
    author: Optional[str] = opt(None, "Model metadata: author.")
    license: Optional[str] = opt(None, "Model metadata: license.")
    version: Optional[str] = opt(None, "Model metadata: version string.")
    description: Optional[str] = opt(None, "Model metadata: short description.")


class TensorRTOptions(Strict):
    precision: Literal["fp32", "fp16", "int8"] = opt("fp32", "fp32, fp16, or int8 (needs --calib).")
    int8_mode: Literal["qdq", "calibrator"] = opt(
        "qdq",
        "int8: qdq (explicit Q/DQ model, TensorRT 10 and 11) or calibrator (fp32 model + calibration cache, TensorRT 10 only).",
    )
    method: Method = opt("minmax", "int8 calibration method.")
    batch: str = opt("1:8:32", "Optimization profile of the batch axis, MIN:OPT:MAX.")
    workspace: Optional[str] = opt(None, "Builder workspace limit, e.g. 512M or 2G (default: TensorRT's).")
    optimization_level: Optional[int] = opt(
        None, "Builder optimization level 0-5 (TensorRT's default: 3).", flag="--opt-level", ge=0, le=5
    )
    hardware_compatibility: Literal["none", "ampere_plus", "same_cc"] = opt(
        "none", "none (this GPU), ampere_plus (any Ampere or newer), same_cc (same compute capability).", flag="--hardware-compat"
    )
    version_compatible: bool = opt(False, "Engine also runs on later TensorRT versions (embeds the lean runtime; may be slower).")
    timing_cache: Optional[Path] = opt(None, "Timing cache file: read if present, updated after the build (faster rebuilds).")
    trt_version: Optional[str] = opt(
        None,
        f"With --emit-script: the target machine's TensorRT version (default {DEFAULT_TRT_VERSION}); decides flags and models.",
    )
    emit_script: Optional[Path] = opt(
        None, "Where TensorRT is absent: write a build kit (models, build.sh with the trtexec command, README) to this folder."
    )


class OpenVINOOptions(Strict):
    precision: Literal["fp32", "bf16", "int8"] = opt(
        "fp32", "fp32, bf16 (the CPU plugin computes in bf16: AMX/AVX-512-BF16 CPUs), or int8 (NNCF, needs --calib)."
    )
    method: Method = opt("minmax", "int8: NNCF's activation range: minmax or percentile (NNCF has no entropy).")
    exclude: Annotated[list[str], Names] = opt(
        [], "int8: op type (Conv, Gemm, … or OpenVINO's) or node name NNCF leaves in float (repeatable)."
    )


class DataOptions(Strict):
    """Calibration (or evaluation) data: the recipe's `calibration` section, the verbs' --calib/--samples/--holdout."""

    data: Optional[str] = opt(
        None, "Calibration data: image folder, .npy/.npz of normalized inputs, or 'digits'.", flag="--calib"
    )
    samples: int = opt(256, "Calibration samples (seeded shuffle).", ge=1)
    holdout: int = opt(64, "Further samples kept out of calibration to verify on.", ge=0)


class ToleranceOverrides(Strict):
    max_rel_err: Optional[float] = opt(None, "Override: allowed max |error| / reference range.", gt=0)
    min_cosine: Optional[float] = opt(None, "Override: minimum per-sample cosine similarity.", ge=-1, le=1)
    min_top1: Optional[float] = opt(None, "Override: minimum top-1 agreement.", ge=0, le=1)


class DetectOptions(Strict):
    """How detect outputs are decoded before their boxes are compared (exporter/tasks/detect.py)."""

    conf: float = opt(0.25, "Detections: the confidence a box needs to be compared (Ultralytics' predict default).", gt=0, lt=1)
    iou: float = opt(
        0.7, "Detections: the IoU above which NMS drops the weaker box of a class (Ultralytics' default).", gt=0, le=1
    )


def flag_of(model: type[BaseModel], name: str) -> str:
    """The CLI spelling of a field: its declared flag, else --field-name."""
    extra = model.model_fields[name].json_schema_extra
    flag = extra.get("flag") if isinstance(extra, dict) else None
    return flag if isinstance(flag, str) and flag else "--" + name.replace("_", "-")


def default_of(model: type[BaseModel], name: str):
    field = model.model_fields[name]
    return field.get_default(call_default_factory=True)


def validate_model(model: type[BaseModel], data: dict, origin: str | None = None):
    """``model`` from ``data``; a problem is one sentence naming the dotted key (BadInputError, exit 2).

    Without ``origin`` the values came from the command line and the sentence names the flag.
    """
    from exporter.errors import BadInputError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(model, error, origin) for error in exc.errors()]
        prefix = f"{origin}: " if origin else ""
        if len(problems) == 1:
            raise BadInputError(prefix + problems[0]) from None
        listed = "".join(f"\n  - {problem}" for problem in problems)
        raise BadInputError(f"{prefix}{len(problems)} problems:{listed}") from None


def _problem(model: type[BaseModel], error, origin: str | None) -> str:
    """One validation error as 'where: what' (the flag on the command line, the dotted key in a recipe)."""
    if origin is None and error["loc"] and error["loc"][0] in model.model_fields:
        where = flag_of(model, str(error["loc"][0])).split("/")[0]
    else:
        where = ".".join(str(p) for p in error["loc"]) or ("" if origin is None else "(top level)")
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
