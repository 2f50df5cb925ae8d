"""Runners execute one artifact kind; every one subclasses ``exporter.runners.base.Runner``.

base.py declares the whole contract (attributes with types, defaults and meanings, ``infer``,
``close`` and ``with`` support); in short:

    with open_runner(path) as runner:   # or TorchRunner(module)
        outputs = runner.infer(batch)   # batch: float32 NCHW ndarray -> {output name: ndarray}
        runner.batch_dim                # declared batch dimension: a name (dynamic), an int (fixed) or None
        runner.batch_range              # (min, max) samples per runtime call (Core ML range, TensorRT profile) or None
        runner.metadata                 # the cnnexport spec stored in the artifact, or {}

Imports stay lazy: importing this package loads neither torch nor any runtime.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError
from exporter.runners.base import Runner


def detect_kind(path: Path) -> str:
    """Artifact kind from the file itself: the first Format of the stage table that claims it (suffix, then content)."""
    from exporter.kinds import formats

    path = Path(path)
    found = next((f.name for f in formats() if f.claims(path)), None)
    if found is None:
        expected = ", ".join(f.describe or f.name for f in formats())
        raise BadInputError(f"cannot tell what kind of artifact {path} is (expected {expected})")
    return found


def artifact_spec(path: Path):
    """The ModelSpec cnnexport wrote into an artifact, or None."""
    from exporter.spec import ModelSpec

    meta = open_runner(path).metadata
    return ModelSpec.from_dict(meta) if meta else None


def open_runner(path: Path, kind: str | None = None) -> Runner:
    """The runner for the artifact at ``path`` (kind detected when not given); BadInputError when it is missing.

    A backend that is not installed is BackendUnavailable (exit 3) with the install line, from the runner itself.
    """
    from exporter.kinds import formats

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"artifact {path} does not exist")
    kind = kind or detect_kind(path)
    found = next((f for f in formats() if f.name == kind), None)
    if found is None:
        raise BackendUnavailable(f"verifying {kind} artifacts is not available in this version of cnnexport")
    return found.open(path)
