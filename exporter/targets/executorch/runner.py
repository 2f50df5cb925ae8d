"""ExecuTorch programs run by ExecuTorch's own runtime (``executorch.runtime``: XNNPACK + portable kernels).

A program is memory-planned for a batch range; ``infer`` runs a larger batch in chunks of the
planned maximum, as an app would. The runtime's XNNPACK threadpool is process-wide: ``threads``
resets it (``bench`` pins it to the threads it reports).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.errors import BackendUnavailable, BadInputError
from exporter.runners.base import Runner
from exporter.targets import native_stderr_silenced
from exporter.targets.executorch import INSTALL_HINT, quiet_torchao_import

RULES = {"fp32": None, "int8": "int8"}


def _runtime():
    quiet_torchao_import()
    try:
        from executorch.runtime import Runtime
    except ImportError:
        raise BackendUnavailable(f"ExecuTorch is not installed: {INSTALL_HINT}") from None
    return Runtime.get()


def set_threads(threads: int) -> None:
    """The XNNPACK threadpool size (process-wide in ExecuTorch's Python runtime)."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(int(threads))


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        path = Path(path)
        runtime = _runtime()
        if threads:
            set_threads(threads)
        try:
            with native_stderr_silenced():  # XNNPACK's cpuinfo prints probe failures on the first load
                self._program = runtime.load_program(path)
                self._method = self._program.load_method("forward")
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError with an error code
            raise BadInputError(f"{path} is not an ExecuTorch program this runtime can load ({exc})") from None
        names = self._program.method_names
        self.metadata = self._constant("cnnexport_spec", names, path) or {}
        declared = self._constant("cnnexport_precision", names, path) or "fp32"
        self.declared_precision = declared
        self.precision = RULES.get(declared)
        planned = self._method.metadata.input_tensor_meta(0).sizes()
        low, high = self._constant("cnnexport_batch", names, path) or (planned[0], planned[0])
        self.planned = (int(low), int(high))  # the range the program was memory-planned for
        self.batch_range = self.planned
        self.batch_dim = "batch" if low < high else int(high)
        self.requested_fixed_batch = int(high) if low == high else None
        outputs = self.metadata.get("outputs") or []
        self.output_names = [o["name"] for o in outputs] if outputs else ["logits"]

    def _constant(self, method: str, names, path: Path):
        if method not in names:
            return None
        values = self._program.load_method(method).execute([])  # a constant method returns its value's items
        if method == "cnnexport_batch":
            return values
        if method == "cnnexport_spec":
            from exporter.spec import stored_spec

            return stored_spec(values[0], path)
        return values[0]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        low, high = self.planned
        if len(batch) < low:
            raise BadInputError(f"this ExecuTorch program takes batches of {low} to {high}, got {len(batch)}")
        chunks = []
        for start in range(0, len(batch), high):
            part = np.ascontiguousarray(batch[start : start + high], dtype=np.float32)
            if len(part) < low:  # a short tail: pad to MIN, keep the real rows
                part = np.concatenate([part, np.repeat(part[-1:], low - len(part), axis=0)])
            outputs = self._method.execute([torch.from_numpy(part)])
            chunks.append([o.detach().numpy()[: min(high, len(batch) - start)] for o in outputs])
        names = self.output_names if len(self.output_names) == len(chunks[0]) else [str(i) for i in range(len(chunks[0]))]
        return {name: np.concatenate([c[i] for c in chunks]).astype(np.float32) for i, name in enumerate(names)}

    def close(self) -> None:
        self._method = None
        self._program = None


def open_artifact(path: Path, threads: int | None = None, device: str = "cpu") -> ExecuTorchRunner:
    """The executorch format's runner: the CPU (XNNPACK and portable kernels)."""
    if device != "cpu":
        raise BackendUnavailable("cnnexport runs ExecuTorch programs on the CPU (XNNPACK) only")
    return ExecuTorchRunner(path, threads=threads)
