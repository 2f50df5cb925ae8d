"""Stages produce artifacts; they never run or judge them (that is runners/ and verify.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StageOutput:
    """What a stage wrote into its staging folder: the primary file first, then companions."""

    files: list[str]
    details: dict = field(default_factory=dict)


def example_batch(spec, batch_size: int = 2):
    """Export-time example input. Batch 2, not 1: torch.export specializes dimensions of size 1."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.rand((batch_size, *spec.input_shape), generator=generator)
