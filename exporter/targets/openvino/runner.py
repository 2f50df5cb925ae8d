"""OpenVINO IRs (and ONNX models, for `bench --runtime openvino`) on OpenVINO's CPU plugin.

The plugin's ``INFERENCE_PRECISION_HINT`` is always pinned: on CPUs with AMX or AVX-512-BF16
OpenVINO otherwise computes an "fp32" model in bf16, and an fp32 artifact judged that way would
fail the fp32 rule for the wrong reason (or a bf16 one pass without saying so). The hint is the
one the IR records (fp32 and int8: f32; bf16: bf16), or the caller's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import BackendUnavailable, BadInputError
from exporter.runners.base import Runner, default_threads

# the pass rule each declared precision is judged by (bf16 by the fp16 rule)
RULES = {"fp32": None, "bf16": "fp16", "int8": "int8"}


class OpenVINORunner(Runner):
    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, hint: str | None = None):
        super().__init__()
        from exporter.targets.openvino.stage import HINTS, cpu_has_bf16, import_openvino, stored

        ov = import_openvino()
        path = Path(path)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own errors
            raise BadInputError(f"{path} cannot be read by OpenVINO ({str(exc).splitlines()[0][:300]})") from None
        if path.suffix.lower() == ".onnx":
            import onnx

            from exporter.spec import METADATA_KEY, stored_spec

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            self.metadata, declared = stored_spec(props.get(METADATA_KEY, ""), path), "fp32"
        else:
            self.metadata, declared = stored(model)
        self.declared_precision = declared
        self.precision = RULES.get(declared)
        self.hint = hint or HINTS.get(declared, "f32")
        if len(model.inputs) != 1:
            raise BadInputError(f"{path} has {len(model.inputs)} inputs; cnnexport verifies single-input image models")
        port = model.inputs[0]
        self.input_name = port.get_any_name()
        first = port.get_partial_shape()[0]
        self.batch_dim = "batch" if first.is_dynamic else first.get_length()
        self.output_names = [o.get_any_name() for o in model.outputs]
        self.unsupported_op = None
        if self.hint == "bf16" and not cpu_has_bf16():
            self.unsupported_op = BackendUnavailable("cpu has no bf16")
            self._request = None
            return
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.hint}
        threads = threads or default_threads()
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"OpenVINO cannot compile {path.name} ({str(exc).splitlines()[0][:300]})") from None
        self._request = self._compiled.create_infer_request()

    @property
    def compiled_hint(self) -> str | None:
        """The INFERENCE_PRECISION_HINT the CPU plugin compiled with (what the numbers were computed in)."""
        return self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string() if self._request is not None else None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.unsupported_op is not None:
            raise self.unsupported_op
        assert self._request is not None  # compiled unless unsupported_op says why not
        results = self._request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        values = list(results.values())
        return {name: np.array(value, dtype=np.float32) for name, value in zip(self.output_names, values)}

    def close(self) -> None:
        self._request = None
        self._compiled = None


def open_artifact(path: Path, threads: int | None = None, device: str = "cpu") -> OpenVINORunner:
    """The OpenVINO format's runner: the CPU plugin (an ONNX file given here runs on OpenVINO too)."""
    if device != "cpu":
        raise BackendUnavailable("cnnexport runs OpenVINO on its CPU plugin only")
    return OpenVINORunner(path, threads=threads)
