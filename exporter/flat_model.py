"""The module every artifact of a multi-output model is exported from (imports torch: load it lazily)."""

from __future__ import annotations

from typing import Any

import torch

from exporter.outputs import pick


class FlatOutputs(torch.nn.Module):
    """A model whose forward returns a tuple of its chosen outputs, in order, named by ``output_names``.

    Exporters and runtimes disagree on how they flatten dicts and namedtuples; a plain tuple in a
    fixed order, with the names given to each exporter explicitly, means the same everywhere.
    """

    def __init__(self, model, paths: list[tuple], names: list[str]):
        super().__init__()
        self.model = model
        self.paths = [tuple(p) for p in paths]
        self.output_names = list(names)

    def forward(self, x):
        out = self.model(x)
        return tuple(pick(out, path) for path in self.paths)


def flat_module(module, found: list[tuple[str, tuple, Any]]):
    """``module`` itself when it returns one tensor; else a module returning the chosen outputs as a tuple."""
    if len(found) == 1 and found[0][1] == ():
        return module
    return FlatOutputs(module, [path for _, path, _ in found], [name for name, _, _ in found])
