"""The reference: an eval-mode PyTorch module in fp32, in process (on the CPU, or a CUDA device for bench)."""

from __future__ import annotations

import numpy as np

from exporter.runners.base import Runner


class TorchRunner(Runner):
    name = "pytorch"
    batch_dim = "dynamic"  # a module declares no input signature: any batch size

    def __init__(self, module, output_names: list[str] | str | None = None, device: str = "cpu"):
        """``output_names``: what to call the outputs forward returns, in order (default: the names a
        multi-output model was wrapped with at load, else each tensor's path; a lone tensor is ``logits``)."""
        super().__init__()
        if device != "cpu" and hasattr(module, "to"):
            module = module.to(device)
        self.module = module.eval() if hasattr(module, "eval") else module
        self.device = device
        if isinstance(output_names, str):
            output_names = [output_names]
        self.declared_names = list(output_names or getattr(module, "output_names", None) or [])
        self.output_names = list(self.declared_names) or ["logits"]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        from exporter.outputs import named

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.no_grad():
            out = self.module(x if self.device == "cpu" else x.to(self.device))
        outputs = named(out, self.declared_names)
        self.output_names = list(outputs)
        # .cpu() of a CUDA tensor waits for the work, so a timed call includes it
        return {name: value.detach().float().cpu().numpy() for name, value in outputs.items()}

    def exact_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """This module's outputs computed in float64 on ``batch``: what fp32 arithmetic approximates.
        An ill-conditioned model (tiny BatchNorm variances, large cancelling activations) differs
        from its own float64 result by more than a fixed fp32 tolerance allows."""
        import copy

        import torch

        from exporter.outputs import named

        double = copy.deepcopy(self.module).to("cpu").double()
        with torch.no_grad():
            out = named(double(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float64))), self.declared_names)
        return {name: value.detach().cpu().numpy() for name, value in out.items()}

    def close(self) -> None:
        self.module = None
