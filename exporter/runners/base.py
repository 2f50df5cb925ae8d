"""The runner contract: what every runner declares and does, in one place.

A runner executes one artifact (or the PyTorch reference) on float32 NCHW batches and returns
NumPy arrays. Verification, the pipeline, ``bench`` and ``eval`` read only what is declared here;
each runner sets what its artifact declares and leaves the rest at these defaults.

    with open_runner(path) as runner:          # or TorchRunner(module)
        outputs = runner.infer(batch)          # float32 NCHW ndarray -> {output name: ndarray}

Batch declarations, one meaning for every runner:

* ``batch_dim`` is the first dimension of the artifact's input *as the artifact declares it*:
  a ``str`` (a symbolic name, e.g. ONNX's dim_param, "batch" for a flexible Core ML or TensorRT
  input, "dynamic" for a PyTorch module, which declares no signature) when the batch size may
  vary; an ``int`` when the artifact fixes it to that size; ``None`` when it does not say.
  Verification fails an artifact whose ``batch_dim`` is an int, unless it equals
  ``requested_fixed_batch``.
* ``batch_range`` is the (min, max) number of samples one call of the underlying runtime accepts
  (a Core ML shape range, a TensorRT optimization profile); max ``None`` = unbounded; ``None`` =
  no range declared beyond ``batch_dim``. Runners whose runtime has such a range (Core ML via the
  MIL interpreter, TensorRT) accept any batch in ``infer`` by running chunks of at most max
  samples (TensorRT also pads a chunk shorter than min); others pass the batch to the runtime.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

THREADS_ENV = "CNNEXPORT_THREADS"


def default_threads() -> int | None:
    """The threads a runner computes with when its caller names none: CNNEXPORT_THREADS, else the runtime's own choice.

    On a shared machine (two test workers on 2 cores, a busy CI host) runtimes that each take every
    core and spin-wait slow one another down; CNNEXPORT_THREADS=1 keeps each to one.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


# The declared attributes, in the order documented below (the contract test checks each).
CONTRACT_ATTRIBUTES = (
    "name",
    "input_name",
    "output_names",
    "metadata",
    "batch_dim",
    "batch_range",
    "precision",
    "reference_transform",
    "unsupported_op",
    "requested_fixed_batch",
)


class Runner:
    """Base class of every runner; subclasses call ``super().__init__()`` and set what they know."""

    name: ClassVar[str] = ""
    """Which runner this is, as reports name it ("pytorch", "onnxruntime", "tensorrt", ...)."""

    input_name: str = "input"
    """The name of the artifact's single input."""

    output_names: list[str]
    """The artifact's output names, in the artifact's order (``infer`` returns a subset in this order)."""

    metadata: dict
    """The cnnexport spec (ModelSpec.to_dict()) stored in the artifact at export, or {} when it carries none."""

    batch_dim: str | int | None = None
    """The declared batch dimension: a symbolic name (dynamic), an int (fixed) or None (unknown). See the module docstring."""

    batch_range: tuple[int, int | None] | None = None
    """(min, max) samples per runtime call (max None = unbounded), or None when the artifact declares no range."""

    precision: str | None = None
    """The precision the artifact declares ("fp16" for an fp16 Core ML package, "int8" for compressed
    weights, ...); None when it declares none. `cnnexport verify` judges an artifact that declares a
    precision other than fp32 by that precision's rule. The ONNX and TensorRT runners report None: their
    artifacts record a precision too, but judging them by it would change what `cnnexport verify` does."""

    reference_transform: str | None = None
    """How the first output relates to the reference's logits ("softmax": a Core ML classifier's
    probabilities); None when the first output is the logits themselves."""

    unsupported_op: Exception | None = None
    """Set when the artifact opened but cannot be executed here (the MIL interpreter lacks an op):
    verification reports ``skipped`` with it, never pass, and ``infer`` raises it."""

    requested_fixed_batch: int | None = None
    """A batch size the export fixed on the user's request (``cnnexport coreml --batch 1``, a TensorRT
    profile with min == max): a ``batch_dim`` equal to it is not a baked batch."""

    def __init__(self) -> None:
        self.output_names = []
        self.metadata = {}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 NCHW batch; return {output name: NumPy array} with the batch's first dimension."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer")

    def close(self) -> None:
        """Release the runtime's resources (sessions, engines, device memory). Idempotent; no ``infer`` after it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} batch_dim={self.batch_dim!r} batch_range={self.batch_range!r}>"


class _Adapted(Runner):
    """An object that has ``infer`` but does not subclass Runner (a test double, a caller's own class)."""

    name = "adapted"

    def __init__(self, wrapped) -> None:
        super().__init__()
        self.wrapped = wrapped
        for attribute in CONTRACT_ATTRIBUTES[1:]:  # what it declares; the contract's defaults for the rest
            if hasattr(wrapped, attribute):
                setattr(self, attribute, getattr(wrapped, attribute))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.wrapped.infer(batch)

    def close(self) -> None:
        close = getattr(self.wrapped, "close", None)
        if callable(close):
            close()


def as_runner(runner) -> Runner:
    """``runner`` itself when it is a Runner; otherwise a Runner view of it with the contract's defaults."""
    return runner if isinstance(runner, Runner) else _Adapted(runner)
