"""The reference: an eval-mode PyTorch module in fp32, in process."""

from __future__ import annotations

import numpy as np


class TorchRunner:
    name = "pytorch"
    batch_dim = "dynamic"

    def __init__(self, module, output_name: str = "logits"):
        self.module = module.eval() if hasattr(module, "eval") else module
        self.output_name = output_name
        self.metadata: dict = {}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return {self.output_name: out.detach().float().cpu().numpy()}
