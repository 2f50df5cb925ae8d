"""TensorRT build decisions, made without TensorRT: batch profile, workspace, and which
network/flags/ONNX model a precision needs on a given TensorRT version.

Plain functions and dataclasses with no TensorRT import, so they are unit-tested on machines
without it; ``build.build_engine`` and ``kit.write_kit`` both carry out what they decide.

TensorRT 10.x and 11.x differ (TensorRT 11 removed weak typing):

  precision  TensorRT 10.x                                  TensorRT 11.x
  fp32       fp32 ONNX, TF32 off                            fp32 ONNX, strongly typed, TF32 off
  fp16       fp32 ONNX + BuilderFlag.FP16 (weakly typed)    fp16 ONNX (fp32 I/O), strongly typed
  int8 qdq   symmetric Q/DQ ONNX, strongly typed            the same
  int8 calib fp32 ONNX + BuilderFlag.INT8 + calibrator      removed: use the Q/DQ model
             reading the calibration cache

Strong typing for the Q/DQ model makes the Q/DQ placement decide what runs in int8 and keeps
the rest in the model's own precision; TensorRT 11 ignores the flag (always strongly typed),
so setting it is right on both. fp32 builds turn TF32 off: TF32 rounds products to 10-bit
mantissas, which the fp32 tolerance (1e-4 of the output range) rightly rejects.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from exporter.errors import BadInputError, ExportError
from exporter.spec import BatchRange, parse_batch_range
from exporter.targets.tensorrt.version import version_tuple

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("qdq", "calibrator")
# our name -> (tensorrt.HardwareCompatibilityLevel member, trtexec value)
HARDWARE_LEVELS = {
    "none": ("NONE", "none"),
    "ampere_plus": ("AMPERE_PLUS", "ampere+"),
    "same_cc": ("SAME_COMPUTE_CAPABILITY", "sameComputeCapability"),
}
MIB = 1024**2


# ----------------------------------------------------------------- option parsing


@dataclass(frozen=True)
class BatchProfile(BatchRange):
    """One optimization profile over the batch dimension: min <= opt <= max, as trtexec takes it."""

    def trtexec_flags(self, input_name: str, chw: tuple[int, int, int]) -> list[str]:
        return [f"--{key}Shapes={input_name}:{'x'.join(map(str, shape))}" for key, shape in self.shapes(chw).items()]


def parse_batch_profile(text: str) -> BatchProfile:
    """'1:8:32' -> BatchProfile(1, 8, 32); anything else is a BadInputError saying what is wanted."""
    return BatchProfile(*parse_batch_range(text))


_UNITS = {"": 1, "B": 1, "K": 1024, "M": MIB, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'2G' -> 2147483648. Units K/M/G/T are binary (KiB, MiB, …), 'B'/'iB' suffixes allowed; plain numbers are bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise BadInputError(f"--workspace expects a size like 512M or 2G, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    if number * _UNITS[unit] > 2**62:
        raise BadInputError(f"--workspace {text!r} is larger than any GPU's memory")
    size = int(number * _UNITS[unit])
    if size < MIB:
        raise BadInputError(f"--workspace {text!r} is below 1 MiB; TensorRT needs more scratch memory than that (try 1G)")
    return size


# ----------------------------------------------------------------- the version decision


@dataclass(frozen=True)
class BuildPlan:
    """What a (TensorRT version, precision, int8 mode) needs, decided without TensorRT."""

    trt_version: str
    precision: str
    int8_mode: str | None
    onnx: str  # which ONNX model to build from: 'fp32' | 'fp16' | 'qdq'
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # tensorrt.BuilderFlag members to set
    cleared_flags: tuple[str, ...]  # tensorrt.BuilderFlag members to clear
    calibrator: bool  # an IInt8EntropyCalibrator2 reading the calibration cache
    notes: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return version_tuple(self.trt_version)[0]

    def trtexec_flags(self, calib_file: str | None = None) -> list[str]:
        flags = []
        if self.strongly_typed:
            flags.append("--stronglyTyped")
        if "FP16" in self.builder_flags:
            flags.append("--fp16")
        if "INT8" in self.builder_flags:
            flags.append("--int8")
            if self.calibrator:
                if not calib_file:
                    raise ExportError("the calibrator build needs its calibration cache file")
                flags.append(f"--calib={calib_file}")
        if "TF32" in self.cleared_flags:
            flags.append("--noTF32")
        return flags

    def to_dict(self) -> dict:
        return asdict(self)


def decide_plan(trt_version: str, precision: str, int8_mode: str = "qdq") -> BuildPlan:
    """The network kind, builder flags and ONNX model for this precision on this TensorRT version."""
    if precision not in PRECISIONS:
        raise BadInputError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if int8_mode not in INT8_MODES:
        raise BadInputError(f"--int8-mode must be one of {', '.join(INT8_MODES)}")
    major, minor, _ = version_tuple(trt_version)
    if major < 10:
        raise BadInputError(f"TensorRT {trt_version} is older than 10.0; cnnexport builds engines for TensorRT 10.x and 11.x")
    weak_typing_note = (
        ("TensorRT deprecated weakly typed networks in 10.12; TensorRT 11 builds fp16 from the fp16 ONNX instead",)
        if major == 10 and minor >= 12
        else ()
    )
    mode = int8_mode if precision == "int8" else None
    if precision == "fp32":
        return BuildPlan(
            trt_version, precision, None, "fp32", major >= 11, (), ("TF32",), False, ("TF32 disabled so fp32 means fp32",)
        )
    if precision == "fp16":
        if major >= 11:
            return BuildPlan(
                trt_version,
                precision,
                None,
                "fp16",
                True,
                (),
                (),
                False,
                (
                    "TensorRT 11 removed BuilderFlag.FP16: built from the fp16 ONNX (fp32 inputs/outputs) "
                    "as a strongly typed network",
                ),
            )
        return BuildPlan(trt_version, precision, None, "fp32", False, ("FP16",), (), False, weak_typing_note)
    if mode == "qdq":
        return BuildPlan(
            trt_version,
            precision,
            mode,
            "qdq",
            True,
            (),
            (),
            False,
            ("explicit quantization: the symmetric Q/DQ model decides what runs in int8",),
        )
    if major >= 11:
        raise BadInputError(
            f"TensorRT {trt_version} removed implicit INT8 calibration (BuilderFlag.INT8 and calibrators); "
            "use --int8-mode qdq, the explicitly quantized Q/DQ model"
        )
    return BuildPlan(
        trt_version,
        precision,
        mode,
        "fp32",
        False,
        ("INT8",),
        (),
        True,
        ("implicit quantization: BuilderFlag.INT8 with the calibration cache",) + weak_typing_note,
    )


# ----------------------------------------------------------------- build options


@dataclass(frozen=True)
class BuildOptions:
    profile: BatchProfile
    workspace: int | None = None  # bytes; None: TensorRT's default (the device's memory)
    optimization_level: int | None = None  # 0..5; None: TensorRT's default (3)
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.hardware_compatibility not in HARDWARE_LEVELS:
            raise BadInputError(f"--hardware-compat must be one of {', '.join(HARDWARE_LEVELS)}")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise BadInputError(f"--opt-level must be between 0 and 5, got {self.optimization_level}")

    def trtexec_flags(self) -> list[str]:
        flags = []
        if self.workspace is not None:
            flags.append(f"--memPoolSize=workspace:{max(1, self.workspace // MIB)}M")
        if self.optimization_level is not None:
            flags.append(f"--builderOptimizationLevel={self.optimization_level}")
        if self.hardware_compatibility != "none":
            flags.append(f"--hardwareCompatibilityLevel={HARDWARE_LEVELS[self.hardware_compatibility][1]}")
        if self.version_compatible:
            flags.append("--versionCompatible")
        return flags

    def to_dict(self) -> dict:
        return {
            "profile": str(self.profile),
            "workspace_bytes": self.workspace,
            "optimization_level": self.optimization_level,
            "hardware_compatibility": self.hardware_compatibility,
            "version_compatible": self.version_compatible,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
        }


def trtexec_command(
    onnx_file: str,
    engine_file: str,
    input_name: str,
    chw: tuple[int, int, int],
    plan: BuildPlan,
    options: BuildOptions,
    calib_file: str | None = None,
    timing_cache: str = "timing.cache",
) -> list[str]:
    """The exact trtexec command line that builds what ``build_engine`` builds."""
    return [
        "trtexec",
        f"--onnx={onnx_file}",
        f"--saveEngine={engine_file}",
        *options.profile.trtexec_flags(input_name, chw),
        *plan.trtexec_flags(calib_file),
        *options.trtexec_flags(),
        f"--timingCacheFile={timing_cache}",
        "--skipInference",
    ]
