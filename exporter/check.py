"""What `cnnexport inspect` and `cnnexport verify` find, for exporter/cli/check.py to print.

The CLI parses the flags (loading the checkpoint they describe), calls one function here and prints
what it returns; the error sentences are made here too.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import BadInputError


def checkpoint_facts(loaded, checkpoint: Path, flops: bool = False) -> dict:
    """inspect's answer for a checkpoint: the report's model section, the loader's notes, bytes on disk (and FLOPs)."""
    from exporter.report import model_section

    info = model_section(loaded)
    info["notes"] = loaded.notes
    info["bytes"] = (
        sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) if checkpoint.is_dir() else checkpoint.stat().st_size
    )
    if flops:
        from exporter.measure.flops import model_cost

        info.update(model_cost(loaded))
    return info


def check_kit(artifact: Path, progress) -> dict | None:
    """A folder standing for an artifact built elsewhere (TensorRT's build kit): its own checks; None for an artifact."""
    if not artifact.is_dir():
        return None
    from exporter.kinds import formats

    if any(f.claims(artifact) for f in formats()):
        return None
    found = next((c for f in formats() if (c := f.check_kit(artifact, progress)) is not None), None)
    if found is None:
        raise BadInputError(f"{artifact} is a directory but no artifact: not a .mlpackage, and not a build kit cnnexport wrote")
    return found


def verify_artifact(
    artifact: Path, loaded, reference: Path | None, opts, explain: bool = False, images: Path | None = None, progress=None
) -> tuple[dict, str | None]:
    """(verify's report, its error sentence when verification failed, else None) for an artifact on disk.

    With ``explain`` the report also compares the artifact with PyTorch layer by layer (``report["explain"]``).
    """
    from exporter.pipeline import verify_existing
    from exporter.report import build_report
    from exporter.runners import artifact_spec

    if progress is not None:
        progress(f"verifying {artifact}")
    result = verify_existing(artifact, loaded, reference, opts)
    report = build_report([result], loaded, None if loaded else artifact_spec(reference or artifact))
    if explain:
        from exporter.inputs import user_inputs
        from exporter.rescue.debug import explain as explain_layers

        if loaded is None:
            raise BadInputError("--explain compares against PyTorch: pass --checkpoint")
        batch = user_inputs(images, loaded.spec).array if images else opts.input_sets(loaded.spec)[-1].array
        report["explain"] = explain_layers(artifact, loaded.module, batch, opts.precision, opts.tolerance())
    if result.verification.status != "fail":
        return report, None
    from exporter.rescue.debug import describe

    first = result.verification.first_divergent
    where = f"; {describe(first)}" if first and "module" in first else ""
    return report, f"verification failed: {result.verification.reason}{where}"
