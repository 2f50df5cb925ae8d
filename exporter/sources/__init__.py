"""Checkpoint sources: one module per ecosystem whose files need more than a state_dict reader.

A source says how it recognises its files (``recognises(globals)``: the globals a pickle names,
read from its opcodes without running anything) and reads one into a RawCheckpoint
(``read(path, weights)``). ``find`` is the one registry lookup exporter.loading uses.
"""

from __future__ import annotations

from types import ModuleType


def registered() -> list[ModuleType]:
    """Every source module, in the order they are asked."""
    from exporter.sources import ultralytics

    return [ultralytics]


def find(unsafe_globals: list[str]) -> ModuleType | None:
    """The source whose files name these globals, or None (the generic weights-only reader)."""
    return next((source for source in registered() if source.recognises(unsafe_globals)), None)
