"""The reference: an eval-mode PyTorch module in fp32, in process (on the CPU, or a CUDA device for bench)."""

from __future__ import annotations

import numpy as np

from exporter.runners.base import Runner


class TorchRunner(Runner):
    name = "pytorch"
    batch_dim = "dynamic"  # a module declares no input signature: any batch size

    def __init__(self, module, output_name: str = "logits", device: str = "cpu"):
        super().__init__()
        if device != "cpu" and hasattr(module, "to"):
            module = module.to(device)
        self.module = module.eval() if hasattr(module, "eval") else module
        self.device = device
        self.output_name = output_name
        self.output_names = [output_name]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.no_grad():
            out = self.module(x if self.device == "cpu" else x.to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        # .cpu() of a CUDA tensor waits for the work, so a timed call includes it
        return {self.output_name: out.detach().float().cpu().numpy()}

    def close(self) -> None:
        self.module = None
