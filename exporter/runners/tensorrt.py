"""TensorRT engines through the tensorrt Python API; device memory is torch CUDA tensors.

Before loading, the engine's sidecar (``NAME.engine.json``) is compared with this machine:
an engine built with another TensorRT version or on another compute capability is refused
with a sentence that says so, instead of TensorRT's serialization assertion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.errors import BadInputError
from exporter.tensorrt import ensure_compatible, machine_description, read_sidecar, require_tensorrt


class TensorRTRunner:
    name = "tensorrt"

    def __init__(self, path: Path):
        path = Path(path)
        require_tensorrt("run")
        import tensorrt as trt

        self.sidecar = read_sidecar(path)
        self.machine = machine_description()
        ensure_compatible(path, self.sidecar, self.machine)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        if self.sidecar.get("version_compatible"):
            # a version-compatible plan carries its lean runtime (host code): trusted because we built it
            self._runtime.engine_host_code_allowed = True
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BadInputError(f"TensorRT could not deserialize {path.name} (a corrupt or foreign engine file)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.inputs]
        if len(self.inputs) != 1:
            raise BadInputError(f"{path.name} has {len(self.inputs)} inputs; cnnexport verifies single-input image models")
        self.input_name = self.inputs[0]
        profile = self.sidecar.get("profile", {})
        self.min_batch = int(profile.get("min", [1])[0])
        self.max_batch = int(profile.get("max", [1])[0])
        # the batch range the user asked for: verification runs at its ends
        self.batch_dim = f"{self.min_batch}..{self.max_batch}"
        self.metadata = self.sidecar.get("spec") or {}
        self._trt = trt
        self._stream = None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``batch``; more samples than the profile's max run in chunks, fewer than its min are padded."""
        n = int(batch.shape[0])
        if self.min_batch <= n <= self.max_batch:
            return self._run(batch)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, self.max_batch):
            chunk = batch[start:start + self.max_batch]
            count = len(chunk)
            if count < self.min_batch:
                chunk = np.concatenate([chunk] * -(-self.min_batch // count))[: self.min_batch]
            parts.append({k: v[:count] for k, v in self._run(chunk).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        trt = self._trt
        if self._stream is None:
            self._stream = torch.cuda.Stream()  # not the legacy default stream, which enqueueV3 would have to synchronize
        with torch.cuda.stream(self._stream):  # copies, allocations and the engine on one stream
            in_dtype = _torch_dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to("cuda").to(in_dtype).contiguous()
            if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
                raise BadInputError(f"the engine refused input shape {tuple(x.shape)}")
            self.context.set_tensor_address(self.input_name, int(x.data_ptr()))
            outputs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = _torch_dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
                self.context.set_tensor_address(name, int(outputs[name].data_ptr()))
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            result = {name: t.float().cpu().numpy() for name, t in outputs.items()}  # .cpu() waits for the stream
        self._stream.synchronize()
        return result


def _torch_dtype(np_dtype):
    import torch

    return {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
            np.dtype(np.int8): torch.int8, np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}[np.dtype(np_dtype)]
