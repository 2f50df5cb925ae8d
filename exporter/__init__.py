"""cnnexport: PyTorch CNN checkpoint -> verified deployment artifacts.

Python API (heavy libraries load on first use):

    from exporter.build import build                            # what every verb calls
    made = build("int8", "resnet18.pt", calibration={"data": "images/"})  # [resnet18.onnx, resnet18.int8.onnx]

    from exporter import load_checkpoint, export_artifact, simplify_artifact, verify_existing, VerifyOptions

    model = load_checkpoint("resnet18.pt")                      # any checkpoint form -> LoadedModel
    result = export_artifact("onnx", model, "out/resnet18.onnx")
    print(result.verification.status, result.verification.to_dict()["max_abs_err"])
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "KINDS": "exporter.kinds",
    "load_checkpoint": "exporter.loading.checkpoint",
    "LoadedModel": "exporter.loading.checkpoint",
    "export_artifact": "exporter.pipeline",
    "simplify_artifact": "exporter.targets.onnx.flow",
    "verify_existing": "exporter.pipeline",
    "VerifyOptions": "exporter.pipeline",
    "ModelSpec": "exporter.spec",
    "TOLERANCES": "exporter.verify",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")
