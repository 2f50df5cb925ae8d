"""The tensorrt row of the stage table: an engine built from the int8 / fp16 ONNX, or a build kit where TensorRT is absent."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from exporter import rows
from exporter.options import Method, Strict, opt
from exporter.targets import calibrates_when_int8, options_precision
from exporter.targets.onnx.row import ONNX_INPUTS, ONNX_RUNTIME
from exporter.targets.tensorrt.version import DEFAULT_VERSION

ORDER = 40


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
        f"With --emit-script: the target machine's TensorRT version (default {DEFAULT_VERSION}); decides flags and models.",
    )
    consumer_files: bool = opt(
        False,
        "Also write ENGINE.labels.txt (a class name per line, Triton's label_filename) beside the engine or in the kit; "
        "the engine's JSON sidecar is always written.",
    )
    emit_script: Optional[Path] = opt(
        None, "Where TensorRT is absent: write a build kit (models, build.sh with the trtexec command, README) to this folder."
    )


FORMAT = rows.Format(
    "tensorrt",
    "exporter.targets.tensorrt.runner:open_artifact",
    (".engine", ".plan"),
    bench_devices=("cuda",),
    describe=".engine",
    kit="exporter.targets.tensorrt.flow:lint_kit",
    companion_suffixes=(".json",),
)

ROWS = [
    rows.ArtifactKind(
        name="tensorrt",
        kind="tensorrt",
        verb="tensorrt",
        suffix=".engine",
        source="onnx",
        options=TensorRTOptions,
        stage="",  # the engine is made by its flow (build), from the int8 / fp16 ONNX it builds first
        build="exporter.targets.tensorrt.flow:build_artifacts",
        format=FORMAT,
        precision=options_precision,
        bench=None,
        calibrates=calibrates_when_int8,
        reads_data=True,
        needs=ONNX_INPUTS,
        needs_of="exporter.targets.tensorrt.flow:upstream_stages",  # int8 Q/DQ: the recipe's int8_tensorrt stage first
        check="exporter.targets.tensorrt.flow:check_options",
        # a recipe cannot name a folder for every machine: it says whether to write the build kit
        # (beside the artifacts) where TensorRT is absent
        recipe_fields={"emit_script": (bool, True)},
        from_recipe="exporter.targets.tensorrt.flow:options_from_recipe",
        extra_outputs="exporter.targets.tensorrt.flow:kit_outputs",
        packages=(*ONNX_RUNTIME, "tensorrt"),
        needs_gpu=True,
        help="TensorRT engine (+ sidecar JSON), verified at the profile's min and max batch; "
        "or, with --emit-script, a build kit.",
        flag_help={"output": "Engine file (default: MODEL.engine beside the model)."},
        without_flags=("eval_data", "batch_sizes"),
    )
]
