"""Everything TensorRT: build decisions, the engine build, its sidecar, the build kit, the lint.

    version.py            the default target version and the one version parser
    plan.py               batch profile, workspace, flags and ONNX model per precision and version
    sidecar.py            NAME.engine.json: where an engine may run
    machine.py            is tensorrt / a CUDA GPU here (lazy imports)
    build.py              the engine, with the tensorrt Python API
    calibration_cache.py  TensorRT's int8 calibration cache text
    lint.py               would TensorRT's ONNX parser take this model (no TensorRT needed)
    kit.py                the build kit written where TensorRT is absent
    flow.py               `cnnexport tensorrt`: quantize, lint, build or kit, verify

The names below load their module on first use, so ``import exporter.targets.tensorrt`` imports
neither tensorrt nor torch, onnx or onnxruntime.
"""

from __future__ import annotations

_API = {
    "DEFAULT_VERSION": "version",
    "version_tuple": "version",
    "version_text": "version",
    "version_code": "version",
    "PRECISIONS": "plan",
    "INT8_MODES": "plan",
    "HARDWARE_LEVELS": "plan",
    "BatchProfile": "plan",
    "BuildOptions": "plan",
    "BuildPlan": "plan",
    "decide_plan": "plan",
    "parse_batch_profile": "plan",
    "parse_size": "plan",
    "trtexec_command": "plan",
    "SIDECAR_FORMAT": "sidecar",
    "sidecar_partial": "sidecar",
    "sidecar_path": "sidecar",
    "read_sidecar": "sidecar",
    "compatibility_problems": "sidecar",
    "ensure_compatible": "sidecar",
    "tensorrt_status": "machine",
    "cuda_status": "machine",
    "machine_description": "machine",
    "require_tensorrt": "machine",
    "build_engine": "build",
    "activation_scales": "calibration_cache",
    "calibration_cache_text": "calibration_cache",
    "parse_calibration_cache": "calibration_cache",
    "describe_violation": "lint",  # lint.lint itself: `from exporter.targets.tensorrt.lint import lint` (the module is `lint`)
    "KIT_MARKER": "kit",
    "KitRequest": "kit",
    "write_kit": "kit",
    "verify_command": "kit",
    "build_options": "flow",
    "tensorrt_artifacts": "flow",
    "check_for_tensorrt": "flow",
    "lint_kit": "flow",
}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
