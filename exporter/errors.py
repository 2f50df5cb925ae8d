"""Typed errors. Library code raises these; only the CLI turns them into a sentence and an exit code."""

from __future__ import annotations

# Every exit code of the CLI, in one place (the README's table lists the same).
EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BACKEND_UNAVAILABLE = 3
EXIT_INTERNAL = 4  # an unexpected exception: a bug in cnnexport
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


class CnnexportError(Exception):
    """Base class: the message is one sentence a user can act on."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(CnnexportError):
    """A file, option or value given by the user cannot be used."""


class CheckpointError(BadInputError):
    """A checkpoint could not be read, or does not fit the architecture."""


class ArchitectureError(BadInputError):
    """The architecture could not be resolved or built."""


class OutputError(BadInputError):
    """The output location cannot be written."""


class ExportError(BadInputError):
    """The exporter library refused the model; the message carries its reason."""


class VerificationFailed(CnnexportError):
    """An artifact does not compute what the reference computes."""

    exit_code = EXIT_VERIFICATION_FAILED


class UnsupportedOp(CnnexportError):
    """An artifact uses an op the reference interpreter does not implement: it cannot be checked here.

    Verification turns this into ``skipped (unsupported op NAME)``, never ``pass``.
    """

    exit_code = EXIT_BACKEND_UNAVAILABLE

    def __init__(self, op: str, all_ops: list[str] | None = None):
        self.op = op
        self.all_ops = all_ops or [op]
        super().__init__(f"unsupported op {op}")


class BackendUnavailable(CnnexportError):
    """A backend (TensorRT, Core ML predict, ...) cannot run on this machine."""

    exit_code = EXIT_BACKEND_UNAVAILABLE


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message without terminal colours, for one-sentence errors."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit]


def root_cause(exc: BaseException, limit: int = 300) -> str:
    """The innermost cause's first line: torch.onnx wraps the real reason in several layers."""
    seen = set()
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_line(exc, limit)}"
