"""Runners execute one artifact kind; every one subclasses ``exporter.runners.base.Runner``.

base.py declares the whole contract (attributes with types, defaults and meanings, ``infer``,
``close`` and ``with`` support); in short:

    with open_runner(path) as runner:   # or TorchRunner(module)
        outputs = runner.infer(batch)   # batch: float32 NCHW ndarray -> {output name: ndarray}
        runner.batch_dim                # declared batch dimension: a name (dynamic), an int (fixed) or None
        runner.batch_range              # (min, max) samples per runtime call (Core ML range, TensorRT profile) or None
        runner.metadata                 # the cnnexport spec stored in the artifact, or {}

Imports stay lazy: importing this package loads neither torch nor any runtime.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError
from exporter.runners.base import Runner


def detect_kind(path: Path) -> str:
    """Artifact kind from the file itself (suffix first, then content)."""
    import zipfile

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".mlpackage":
        return "coreml"
    if suffix == ".xml":
        return "openvino"
    if suffix in (".engine", ".plan"):
        return "tensorrt"
    if path.is_file() and zipfile.is_zipfile(path):
        from exporter.checkpoint_read import zip_layout

        with zipfile.ZipFile(path) as zf:
            if zip_layout(zf.namelist()) == "torchscript":
                return "torchscript"
    raise BadInputError(f"cannot tell what kind of artifact {path} is (expected .onnx, TorchScript, .mlpackage or .engine)")


def open_runner(path: Path, kind: str | None = None) -> Runner:
    """The runner for the artifact at ``path`` (kind detected when not given); BadInputError when it is missing."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"artifact {path} does not exist")
    kind = kind or detect_kind(path)
    if kind == "tensorrt":  # needs tensorrt + a GPU: BackendUnavailable (exit 3) otherwise
        from exporter.runners.tensorrt import TensorRTRunner

        return TensorRTRunner(path)
    if kind == "openvino":  # needs openvino: BackendUnavailable (exit 3) with the install line otherwise
        from exporter.runners.openvino import OpenVINORunner

        return OpenVINORunner(path)
    if kind == "onnx":
        from exporter.runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path)
    if kind == "torchscript":
        from exporter.runners.torchscript import TorchScriptRunner

        return TorchScriptRunner(path)
    if kind == "coreml":
        import platform

        if platform.system() == "Darwin":
            from exporter.runners.coreml import CoreMLRunner

            return CoreMLRunner(path)
        from exporter.runners.mil import MilRunner

        return MilRunner(path)
    raise BackendUnavailable(f"verifying {kind} artifacts is not available in this version of cnnexport")
