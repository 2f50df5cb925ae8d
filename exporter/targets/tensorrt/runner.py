"""TensorRT engines through the tensorrt Python API; device memory is torch CUDA tensors.

Before loading, the engine's sidecar (``NAME.engine.json``) is compared with this machine:
an engine built with another TensorRT version or on another compute capability is refused
with a sentence that says so, instead of TensorRT's serialization assertion.

Everything that touches device memory or the CUDA stream is in ``TorchDeviceMemory``; the
runner only hands TensorRT the addresses and the stream it gives out.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from exporter.errors import BadInputError
from exporter.runners.base import Runner
from exporter.targets.tensorrt import ensure_compatible, machine_description, read_sidecar, require_tensorrt


class TorchDeviceMemory:
    """Buffers as torch tensors on ``device``; on CUDA every copy, allocation and the engine run on one stream.

    ``device="cuda"`` is what the runner uses; another torch device (``"cpu"``) serves a
    stand-in for TensorRT that reads and writes plain host memory at the given addresses.
    """

    def __init__(self, device: str = "cuda"):
        self.device = device
        self._stream = None

    @contextmanager
    def stream(self):
        """Run the body on this memory's stream; yields the stream handle TensorRT enqueues on (0 off CUDA)."""
        import torch

        if self.device != "cuda":
            yield 0
            return
        if self._stream is None:
            self._stream = torch.cuda.Stream()  # not the legacy default stream, which enqueueV3 would have to synchronize
        with torch.cuda.stream(self._stream):
            yield self._stream.cuda_stream
        self._stream.synchronize()

    def upload(self, array: np.ndarray, np_dtype):
        """A contiguous device copy of ``array`` (float32) in ``np_dtype``."""
        import torch

        return (
            torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            .to(self.device)
            .to(_torch_dtype(np_dtype))
            .contiguous()
        )

    def empty(self, shape: tuple[int, ...], np_dtype):
        import torch

        return torch.empty(shape, dtype=_torch_dtype(np_dtype), device=self.device)

    @staticmethod
    def address(buffer) -> int:
        return int(buffer.data_ptr())

    @staticmethod
    def download(buffer) -> np.ndarray:
        """float32 host copy (on CUDA, .cpu() waits for the stream)."""
        return buffer.float().cpu().numpy()

    def close(self) -> None:
        self._stream = None


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, path: Path, memory: TorchDeviceMemory | None = None):
        super().__init__()
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
        # the batch range the user asked for: verification runs at its ends, infer keeps every call inside it
        self.batch_range = (self.min_batch, self.max_batch)
        self.requested_fixed_batch = self.min_batch if self.min_batch == self.max_batch else None
        # the engine's own input dimension: -1 (built from a dynamic-batch ONNX model) or a fixed size
        declared = int(self.engine.get_tensor_shape(self.input_name)[0])
        self.batch_dim = "batch" if declared < 0 else declared
        self.metadata = self.sidecar.get("spec") or {}
        self._trt = trt
        self.memory = memory or TorchDeviceMemory("cuda")

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``batch``; more samples than the profile's max run in chunks, fewer than its min are padded."""
        n = int(batch.shape[0])
        if self.min_batch <= n <= self.max_batch:
            return self._run(batch)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, self.max_batch):
            chunk = batch[start : start + self.max_batch]
            count = len(chunk)
            if count < self.min_batch:
                chunk = np.concatenate([chunk] * -(-self.min_batch // count))[: self.min_batch]
            parts.append({k: v[:count] for k, v in self._run(chunk).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        trt, memory = self._trt, self.memory
        with memory.stream() as stream:  # copies, allocations and the engine on one stream
            x = memory.upload(batch, trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
            if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
                raise BadInputError(f"the engine refused input shape {tuple(x.shape)}")
            self.context.set_tensor_address(self.input_name, memory.address(x))
            outputs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = memory.empty(shape, trt.nptype(self.engine.get_tensor_dtype(name)))
                self.context.set_tensor_address(name, memory.address(outputs[name]))
            if not self.context.execute_async_v3(stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            result = {name: memory.download(t) for name, t in outputs.items()}
        return result

    def close(self) -> None:
        # the context before the engine before the runtime, as TensorRT requires
        for attribute in ("context", "engine", "_runtime"):
            if hasattr(self, attribute):
                setattr(self, attribute, None)
        if hasattr(self, "memory"):
            self.memory.close()


def _torch_dtype(np_dtype):
    import torch

    return {
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float16): torch.float16,
        np.dtype(np.int8): torch.int8,
        np.dtype(np.int32): torch.int32,
        np.dtype(np.int64): torch.int64,
    }[np.dtype(np_dtype)]


def open_artifact(path: Path, threads: int | None = None, device: str = "cuda") -> TensorRTRunner:
    """The TensorRT format's runner: needs tensorrt and a GPU (BackendUnavailable, exit 3, otherwise)."""
    return TensorRTRunner(path)
