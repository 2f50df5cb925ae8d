"""Exported programs (``torch.export.save``, ``.pt2``): a graph with its weights, and the example inputs it was traced on.

Recognised by the archive's own layout (``archive_format``; see exporter.loading.probe.zip_layout),
not by the ``.pt2`` suffix: a torch.save file named ``.pt2`` goes through the restricted
unpickler like any other. A program exported with a fixed batch size is refused (no artifact
made from it could have a dynamic batch axis); the example input's shape is the input spec.
"""

from __future__ import annotations

import contextlib

from exporter.errors import CheckpointError, first_line
from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints
from exporter.sources import Source


def recognises(found: CheckpointFile) -> bool:
    return found.layout == "exported-program"


def read(found: CheckpointFile) -> RawCheckpoint:
    import torch

    path = found.path
    try:
        with quiet_logger("torch.export"):  # it logs a traceback before raising
            program = torch.export.load(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path} looks like an exported program (.pt2) but cannot be loaded ({first_line(exc)})") from exc
    require_dynamic_batch(program, path)
    example = program.example_inputs
    spec = {"input_shape": tuple(example[0][0].shape[1:])} if example and example[0] else {}
    return RawCheckpoint(
        form="exported-program",
        module=ExportedProgramModule(program.module()),
        metadata={"example_inputs": example},
        hints=Hints(spec=spec),
    )


@contextlib.contextmanager
def quiet_logger(name: str):
    import logging

    logger = logging.getLogger(name)
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def require_dynamic_batch(program, path) -> None:
    """A .pt2 saved with a fixed batch size can never become an artifact with a dynamic batch axis."""
    import torch

    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    value = inputs[0].meta.get("val") if inputs else None
    if value is not None and value.ndim > 0 and not isinstance(value.shape[0], torch.SymInt):
        raise CheckpointError(
            f"{path} was exported with a fixed batch size of {value.shape[0]}; re-export it with "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}, or pass a state_dict checkpoint with --arch"
        )


def _exported_program_module_class():
    from torch import nn

    class ExportedProgramModule(nn.Module):
        """Wraps ``ExportedProgram.module()``, whose train()/eval() raise, so it behaves like a model."""

        def __init__(self, graph_module):
            super().__init__()
            self.graph_module = graph_module
            # what the model is called: the program's own module, not this wrapper
            self.original_name = getattr(graph_module, "original_name", None) or type(graph_module).__name__

        def train(self, mode: bool = True):
            self.training = mode
            return self

        def forward(self, x):
            return self.graph_module(x)

    return ExportedProgramModule


def ExportedProgramModule(graph_module):  # noqa: N802 - behaves like a class for callers
    return _exported_program_module_class()(graph_module)


FILE = Source(name="exported-program", stage="file", recognises=recognises, read=read, reads="torch.export.save programs (.pt2)")
