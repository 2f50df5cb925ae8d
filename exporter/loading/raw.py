"""RawCheckpoint: what reading a checkpoint gives, before it becomes a LoadedModel.

Its own module so that checkpoint sources (exporter/sources/) can build one without importing the
generic reader that asks them (exporter/loading/checkpoint_read.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.loading.training_formats import Hints


@dataclass
class RawCheckpoint:
    form: str
    state_dict: dict | None = None
    module: Any = None
    metadata: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    hints: Hints = field(default_factory=Hints)
    weights: str = "model"
    written_by: str | None = None
    # BatchNorms a QAT checkpoint had fused into convs: {prefix their weights were moved to: conv prefix}
    fused_batchnorms: dict = field(default_factory=dict)
