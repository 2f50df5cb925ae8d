"""ONNX models on onnxruntime's CPU provider."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporter.errors import BadInputError
from exporter.spec import METADATA_KEY


class OnnxRuntimeRunner:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        ort.set_default_logger_severity(4)  # runtime failures are caught and reported by verify
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BadInputError(f"{path} cannot be loaded by onnxruntime ({str(exc).splitlines()[0][:300]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise BadInputError(f"{path} has {len(inputs)} inputs; cnnexport verifies single-input image models")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.batch_dim = shape[0] if shape else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return {name: np.asarray(value) for name, value in zip(self.output_names, outputs)}
