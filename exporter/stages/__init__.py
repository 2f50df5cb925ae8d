"""Stages produce artifacts; they never run or judge them (that is runners/ and verify.py).

Every stage a row names (``ArtifactKind.stage``) is ``make(StageRequest) -> StageOutput``; the
functions with the stage's own keyword arguments (``export``, ``export_int8``, ...) stay the
library's API, and ``make`` maps the request onto them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageRequest:
    """What every stage is given: the model, its spec, calibration samples, the row's options, where to write."""

    options: Any  # the row's options model (its target folder's row.py)
    staging: Path  # the private folder the stage writes into
    name: str  # the primary file's name
    spec: Any  # the ModelSpec the artifact is made for
    loaded: Any = None  # the LoadedModel: what a checkpoint stage exports (the reference of an ONNX stage)
    source: Path | None = None  # the ONNX file an ONNX stage reads
    calibration: Any = None  # calibration samples (exporter.inputs source), or None
    seed: int = 0
    row: Any = None  # the ArtifactKind being made


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


@contextlib.contextmanager
def decomposed_attention():
    """Trace ``nn.MultiheadAttention`` as its plain ops, not the fused inference fast path.

    In eval mode PyTorch runs MHA as one ``aten::_native_multi_head_attention`` op (ViT), which
    coremltools and the legacy ONNX exporter cannot convert. The slow path computes the same
    attention from linear, matmul and softmax; ``torch.backends.mha`` is PyTorch's switch for it.
    """
    import torch

    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
