"""Building an engine with the TensorRT Python API (needs tensorrt and a CUDA GPU).

The only code that touches ``tensorrt`` to build: it carries out a ``plan.BuildPlan`` with
``plan.BuildOptions`` and writes the engine with its sidecar into a staging folder. tensorrt is
imported lazily; its absence is BackendUnavailable from ``machine.require_tensorrt``.
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter.errors import ExportError
from exporter.stages import StageOutput
from exporter.targets.tensorrt.machine import machine_description, require_tensorrt
from exporter.targets.tensorrt.plan import HARDWARE_LEVELS, BuildOptions, BuildPlan
from exporter.targets.tensorrt.sidecar import sidecar_path


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
        config.hardware_compatibility_level = getattr(
            trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[options.hardware_compatibility][0]
        )
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
