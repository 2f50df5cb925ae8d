"""TensorRT engines: the decisions (pure, testable anywhere) and the builder (needs TensorRT + a GPU).

The decisions — batch profile, workspace size, and which network/flags/ONNX model a precision
needs on a given TensorRT version — live in plain functions and dataclasses with no TensorRT
import, so they are unit-tested on machines without it. ``build_engine`` is the only code here
that touches ``tensorrt``; it imports it lazily and turns its absence into BackendUnavailable.

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

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError, ExportError
from exporter.stages import StageOutput

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("qdq", "calibrator")
# our name -> (tensorrt.HardwareCompatibilityLevel member, trtexec value)
HARDWARE_LEVELS = {
    "none": ("NONE", "none"),
    "ampere_plus": ("AMPERE_PLUS", "ampere+"),
    "same_cc": ("SAME_COMPUTE_CAPABILITY", "sameComputeCapability"),
}
DEFAULT_TRT_VERSION = "10.8.0"
SIDECAR_FORMAT = "cnnexport-tensorrt-sidecar/1"
MIB = 1024**2


# ----------------------------------------------------------------- option parsing


@dataclass(frozen=True)
class BatchProfile:
    """One optimization profile over the batch dimension: min <= opt <= max."""

    min: int
    opt: int
    max: int

    def shapes(self, chw: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
        return {k: (getattr(self, k), *chw) for k in ("min", "opt", "max")}

    def trtexec_flags(self, input_name: str, chw: tuple[int, int, int]) -> list[str]:
        flags = []
        for key, shape in self.shapes(chw).items():
            flags.append(f"--{key}Shapes={input_name}:{'x'.join(map(str, shape))}")
        return flags

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_batch_profile(text: str) -> BatchProfile:
    """'1:8:32' -> BatchProfile(1, 8, 32); anything else is a BadInputError saying what is wanted."""
    wanted = "--batch expects MIN:OPT:MAX positive integers with MIN <= OPT <= MAX, e.g. 1:8:32"
    parts = str(text).strip().split(":")
    if len(parts) != 3:
        raise BadInputError(f"{wanted}; got {text!r}")
    try:
        low, opt, high = (int(p) for p in parts)
    except ValueError:
        raise BadInputError(f"{wanted}; got {text!r}") from None
    if low < 1:
        raise BadInputError(f"{wanted}; got {text!r} (batch sizes start at 1)")
    if not low <= opt <= high:
        raise BadInputError(f"{wanted}; got {text!r} (not in increasing order)")
    return BatchProfile(low, opt, high)


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


def version_tuple(version: str) -> tuple[int, int, int]:
    """'10.8.0.43' -> (10, 8, 0)."""
    parts = re.findall(r"\d+", str(version))
    if not parts:
        raise BadInputError(f"--trt-version expects MAJOR.MINOR.PATCH, got {version!r}")
    nums = [int(p) for p in parts[:3]] + [0, 0]
    return nums[0], nums[1], nums[2]


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
        return BuildPlan(trt_version, precision, None, "fp32", major >= 11, (), ("TF32",), False,
                         ("TF32 disabled so fp32 means fp32",))
    if precision == "fp16":
        if major >= 11:
            return BuildPlan(trt_version, precision, None, "fp16", True, (), (), False,
                             ("TensorRT 11 removed BuilderFlag.FP16: built from the fp16 ONNX (fp32 inputs/outputs) as a strongly typed network",))
        return BuildPlan(trt_version, precision, None, "fp32", False, ("FP16",), (), False, weak_typing_note)
    if mode == "qdq":
        return BuildPlan(trt_version, precision, mode, "qdq", True, (), (), False,
                         ("explicit quantization: the symmetric Q/DQ model decides what runs in int8",))
    if major >= 11:
        raise BadInputError(
            f"TensorRT {trt_version} removed implicit INT8 calibration (BuilderFlag.INT8 and calibrators); "
            "use --int8-mode qdq, the explicitly quantized Q/DQ model"
        )
    return BuildPlan(trt_version, precision, mode, "fp32", False, ("INT8",), (), True,
                     ("implicit quantization: BuilderFlag.INT8 with the calibration cache",) + weak_typing_note)


# ----------------------------------------------------------------- build options and sidecar


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


def trtexec_command(onnx_file: str, engine_file: str, input_name: str, chw: tuple[int, int, int], plan: BuildPlan,
                    options: BuildOptions, calib_file: str | None = None, timing_cache: str = "timing.cache") -> list[str]:
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


def sidecar_partial(plan: BuildPlan, options: BuildOptions, input_name: str, chw: tuple[int, int, int],
                    source_onnx: Path, source_sha256: str, spec: dict) -> dict:
    """Everything the sidecar records that does not depend on the machine that builds the engine."""
    from exporter import __version__

    return {
        "format": SIDECAR_FORMAT,
        "cnnexport": __version__,
        "precision": plan.precision,
        "int8_mode": plan.int8_mode,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "cleared_flags": list(plan.cleared_flags),
        "input": input_name,
        "profile": {"min": plan_shape(options.profile.min, chw), "opt": plan_shape(options.profile.opt, chw),
                    "max": plan_shape(options.profile.max, chw)},
        "workspace_bytes": options.workspace,
        "optimization_level": options.optimization_level,
        "hardware_compatibility": options.hardware_compatibility,
        "version_compatible": options.version_compatible,
        "source_onnx": source_onnx.name,
        "source_onnx_sha256": source_sha256,
        "spec": spec,
    }


def plan_shape(batch: int, chw: tuple[int, int, int]) -> list[int]:
    return [batch, *chw]


def sidecar_path(engine: Path) -> Path:
    """resnet18.engine -> resnet18.engine.json"""
    return Path(str(engine) + ".json")


def read_sidecar(engine: Path) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise BadInputError(
            f"{engine} has no sidecar {path.name}: cnnexport needs it to know the engine's TensorRT version, GPU, "
            "batch profile and input spec; rebuild with `cnnexport tensorrt` or the build kit's build.sh"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"sidecar {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise BadInputError(f"sidecar {path} is not a cnnexport TensorRT sidecar (format {SIDECAR_FORMAT})")
    return data


def compatibility_problems(sidecar: dict, machine: dict) -> list[str]:
    """Why an engine described by ``sidecar`` cannot run on ``machine`` (empty: it can).

    machine: {"tensorrt_version": "10.8.0.43", "gpu": "NVIDIA H100 …", "compute_capability": "9.0"}.
    Engines run only on the TensorRT version that built them, unless built version-compatible
    (then any later runtime); and only on the compute capability that built them, unless built
    with hardware compatibility (ampere_plus: any GPU of compute capability 8.0 or newer).
    """
    problems = []
    built_v, here_v = sidecar.get("tensorrt_version"), machine.get("tensorrt_version")
    if built_v and here_v:
        built, here = version_tuple(built_v), version_tuple(here_v)
        if sidecar.get("version_compatible"):
            if here < built:
                problems.append(f"it was built version-compatible with TensorRT {built_v}, which needs TensorRT {built_v} or newer here, not {here_v}")
        elif built != here:
            problems.append(f"it was built with TensorRT {built_v} and this machine has TensorRT {here_v}")
    built_cc, here_cc = sidecar.get("compute_capability"), machine.get("compute_capability")
    if built_cc and here_cc:
        level = sidecar.get("hardware_compatibility", "none")
        if level == "ampere_plus":
            if _cc(here_cc) < (8, 0):
                problems.append(f"it was built for Ampere and newer GPUs (compute capability >= 8.0) and this GPU ({machine.get('gpu')}) has {here_cc}")
        elif _cc(built_cc) != _cc(here_cc):
            problems.append(
                f"it was built on {sidecar.get('gpu')} (compute capability {built_cc}) and this GPU "
                f"({machine.get('gpu')}) has compute capability {here_cc}"
            )
    return problems


def _cc(text) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:2])


def ensure_compatible(engine: Path, sidecar: dict, machine: dict) -> None:
    problems = compatibility_problems(sidecar, machine)
    if problems:
        raise BadInputError(
            f"engine {Path(engine).name} cannot run here: {'; '.join(problems)}; TensorRT engines are not portable, "
            f"rebuild it on this machine with `cnnexport tensorrt {sidecar.get('source_onnx', 'MODEL.onnx')}`"
        )


# ----------------------------------------------------------------- the tensorrt-touching part


def tensorrt_status() -> tuple[str | None, str]:
    """(installed TensorRT version or None, why not). Never raises."""
    try:
        import tensorrt as trt
    except ImportError:
        return None, "tensorrt not installed"
    except Exception as exc:  # noqa: BLE001 - a broken install (missing libnvinfer) raises OSError etc.
        return None, f"tensorrt cannot be imported ({type(exc).__name__}: {str(exc)[:120]})"
    return str(getattr(trt, "__version__", "0")), ""


def cuda_status() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to torch"
    return True, ""


def machine_description() -> dict:
    """This machine's TensorRT version, GPU and compute capability (needs tensorrt and a CUDA GPU)."""
    import tensorrt as trt
    import torch

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"tensorrt_version": trt.__version__, "gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def require_tensorrt(purpose: str = "build") -> str:
    """The installed TensorRT version, or BackendUnavailable saying what to do (to 'build' or to 'run' an engine)."""
    version, why = tensorrt_status()
    todo = ("install tensorrt on an NVIDIA machine, or use --emit-script DIR to write a ready-to-run trtexec build kit"
            if purpose == "build" else "run this on the NVIDIA machine the engine was built for, with tensorrt installed")
    if version is None:
        raise BackendUnavailable(
            f"{why}: {'building' if purpose == 'build' else 'running'} a TensorRT engine needs the tensorrt package and an NVIDIA GPU; {todo}"
        )
    ok, why = cuda_status()
    if not ok:
        raise BackendUnavailable(f"tensorrt {version} is installed but {why}; {todo}")
    return version


class _Logger:
    """A tensorrt.ILogger that keeps errors for the message (built lazily: it subclasses a tensorrt type)."""

    @staticmethod
    def make():
        import tensorrt as trt

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    self.errors.append(str(msg))

        return Logger()


def _calibrator(cache_bytes: bytes, batches, input_name: str):
    """IInt8EntropyCalibrator2 that hands TensorRT our calibration cache (and the calibration set if it asks)."""
    import tensorrt as trt
    import torch

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._current = None
            self.batch_size = 16

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):
            batch = next(self._batches, None)
            if batch is None or len(batch) != self.batch_size:
                return None
            self._current = torch.from_numpy(batch).cuda().contiguous()
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self):
            return cache_bytes

        def write_calibration_cache(self, cache):
            return None

    return CacheCalibrator()


def build_engine(
    onnx_path: Path,
    staging_dir: Path,
    name: str,
    plan: BuildPlan,
    options: BuildOptions,
    input_name: str,
    chw: tuple[int, int, int],
    sidecar: dict,
    calib_cache: Path | None = None,
    calib_batches=(),
) -> StageOutput:
    """Parse ONNX, build the engine as ``plan`` says, write ``name`` and its sidecar into ``staging_dir``."""
    require_tensorrt()
    import tensorrt as trt

    logger = _Logger.make()
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise ExportError(f"TensorRT's ONNX parser rejected {Path(onnx_path).name}: {'; '.join(errors)[:400]}")
    config = builder.create_builder_config()
    if options.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if options.hardware_compatibility != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[options.hardware_compatibility][0])
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    profile = builder.create_optimization_profile()
    shapes = options.profile.shapes(chw)
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    if plan.calibrator:
        if calib_cache is None:
            raise ExportError("--int8-mode calibrator needs the calibration cache")
        config.int8_calibrator = _calibrator(Path(calib_cache).read_bytes(), calib_batches, input_name)
        config.set_calibration_profile(profile)
    cache_in = options.timing_cache
    timing_cache = config.create_timing_cache(cache_in.read_bytes() if cache_in and cache_in.is_file() else b"")
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build the engine: {'; '.join(logger.errors)[:400] or 'no reason given'}")
    target = Path(staging_dir) / name
    target.write_bytes(bytes(serialized))
    files = [name]
    details = {"plan": plan.to_dict(), **options.to_dict(), "input": input_name}
    if cache_in is not None:
        write_bytes_atomic(cache_in, bytes(config.get_timing_cache().serialize()))
        details["timing_cache_saved"] = str(cache_in)
    full = {**sidecar, **machine_description(), "built_by": "cnnexport (tensorrt Python API)"}
    side = sidecar_path(target)
    side.write_text(json.dumps(full, indent=2) + "\n")
    files.append(side.name)
    details["sidecar"] = side.name
    details["machine"] = {k: full[k] for k in ("tensorrt_version", "gpu", "compute_capability")}
    return StageOutput(files=files, details=details)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temp file + rename beside ``path`` (a timing cache shared by several builds is never half written)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
