"""Compute cost of a model at its input spec, counted by torch's own FLOP counter."""

from __future__ import annotations


def model_cost(loaded) -> dict:
    """FLOPs and MACs of one image (batch 1) at the spec's input shape; MACs = FLOPs / 2."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        loaded.module(torch.zeros(1, *loaded.spec.input_shape))
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2, "params": loaded.params}
