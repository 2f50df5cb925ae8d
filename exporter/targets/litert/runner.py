"""LiteRT models run by the LiteRT interpreter (``ai_edge_litert``, XNNPACK delegate on CPU).

The model takes batch 1 (exporter/targets/litert/stage.py); a larger batch is one call after
resizing the input where the graph allows it, else one call per sample (``batch_range`` says
which). An NHWC model is fed the NCHW batch transposed, and its 4-D outputs are transposed
back, so verification compares it with PyTorch like any other artifact. An int8 model's int8
input and output are quantized / dequantized with the scale and zero point it declares.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from exporter.errors import BackendUnavailable, BadInputError
from exporter.runners.base import Runner, default_threads
from exporter.targets import native_stderr_silenced

RULES = {"fp32": None, "fp16": "fp16", "int8": "int8"}


class LiteRTRunner(Runner):
    name = "litert"

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        from exporter.spec import stored_spec
        from exporter.targets.litert.stage import METADATA, import_runtime, read_metadata

        path = Path(path)
        interpreter = import_runtime()
        stored = read_metadata(path)
        self.metadata = stored_spec(stored.get(METADATA["spec"], ""), path)
        self.declared_precision = stored.get(METADATA["precision"], "fp32")
        self.precision = RULES.get(self.declared_precision)
        self.layout = stored.get(METADATA["layout"], "nchw")
        try:
            with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                threads = threads or default_threads() or os.cpu_count()
                self._interpreter = interpreter.Interpreter(model_path=str(path), num_threads=threads)
        except Exception as exc:  # noqa: BLE001 - the interpreter raises ValueError / RuntimeError
            raise BadInputError(f"{path} cannot be loaded by the LiteRT interpreter ({str(exc).splitlines()[0][:300]})") from None
        signatures = self._interpreter.get_signature_list()
        if not signatures:
            raise BadInputError(f"{path} has no signature; cnnexport runs LiteRT models through their serving signature")
        self._key = next(iter(signatures))
        self._signature = self._interpreter.get_signature_runner(self._key)
        inputs = self._signature.get_input_details()
        if len(inputs) != 1:
            raise BadInputError(f"{path} has {len(inputs)} inputs; cnnexport verifies single-input image models")
        self.input_name, self._input = next(iter(inputs.items()))
        self._outputs = sorted(self._signature.get_output_details(), key=_position)
        self._shape = tuple(int(d) for d in self._input["shape"])
        self.batch_dim = self._shape[0]
        self.requested_fixed_batch = self._shape[0]  # LiteRT models are made at batch 1 on purpose
        with native_stderr_silenced():
            self.resizable = self._shape[0] == 1 and self._try_resize(2)
        self.batch_range = (1, None) if self.resizable else (1, self._shape[0])
        outputs = self.metadata.get("outputs") or []
        self.output_names = [o["name"] for o in outputs] if len(outputs) == len(self._outputs) else self._outputs

    def _try_resize(self, batch: int) -> bool:
        """Whether the graph runs at ``batch`` (a flatten to a fixed size refuses) and answers for every sample:
        a graph whose reshapes kept batch 1 (a YOLO head's) runs resized but returns one sample's outputs."""
        try:
            found = self._signature(**{self.input_name: np.zeros((batch, *self._shape[1:]), self._input["dtype"])})
            if all(np.shape(found[output])[:1] == (batch,) for output in self._outputs):
                return True
        except (RuntimeError, ValueError):
            pass
        self._signature = self._interpreter.get_signature_runner(self._key)  # back to batch 1
        return False

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.layout == "nhwc":
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        step = len(batch) if self.resizable else 1
        chunks = [self._call(batch[i : i + step]) for i in range(0, len(batch), step)]
        merged = [np.concatenate([c[i] for c in chunks]) for i in range(len(self._outputs))]
        if self.layout == "nhwc":
            merged = [m.transpose(0, 3, 1, 2) if m.ndim == 4 else m for m in merged]
        return {name: np.ascontiguousarray(m, dtype=np.float32) for name, m in zip(self.output_names, merged)}

    def _call(self, part: np.ndarray) -> list[np.ndarray]:
        scale, zero = self._input["quantization"]
        if self._input["dtype"] != np.float32 and scale:
            info = np.iinfo(self._input["dtype"])
            part = np.clip(np.round(part / scale) + zero, info.min, info.max).astype(self._input["dtype"])
        found = self._signature(**{self.input_name: part})
        values = []
        for output in self._outputs:
            value = found[output]
            scale, zero = self._signature.get_output_details()[output]["quantization"]
            values.append((value.astype(np.float32) - zero) * scale if value.dtype != np.float32 and scale else value)
        return values

    def close(self) -> None:
        self._signature = None
        self._interpreter = None


def _position(name: str) -> tuple[int, str]:
    """output_0, output_1, ... in the order PyTorch returned them (output_10 after output_9)."""
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def open_artifact(path: Path, threads: int | None = None, device: str = "cpu") -> LiteRTRunner:
    """The litert format's runner: the interpreter on the CPU."""
    if device != "cpu":
        raise BackendUnavailable("cnnexport runs LiteRT models on the CPU interpreter only")
    return LiteRTRunner(path, threads=threads)
