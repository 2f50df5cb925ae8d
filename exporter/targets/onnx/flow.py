"""The flows of the ONNX rows that are more than stage-verify-install: int8's --fallback search, simplify's two references."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from exporter.build import BuildRequest, from_onnx
from exporter.pipeline import Progress, VerifyOptions, noop, onnx_source, run_stage, verifier
from exporter.report import ArtifactResult, build_report, write_report
from exporter.targets.onnx import simplify
from exporter.targets.onnx.row import Int8Options


def quantize(req: BuildRequest) -> list[ArtifactResult]:
    """INT8: from_onnx; with --fallback auto the ranked rescue around it, with greedy the first-divergent search."""
    if cast(Int8Options, req.options).fallback == "greedy":
        from exporter.rescue.fallback import quantize_with_fallback

        return quantize_with_fallback(req, from_onnx)
    from exporter.rescue.flow import build_from_onnx

    return build_from_onnx(req)


def simplify_artifact(
    source: Path,
    output: Path | None = None,
    loaded=None,
    verify_options: VerifyOptions | None = None,
    keep_failed: bool = False,
    progress: Progress = noop,
    write: bool = True,
) -> ArtifactResult:
    """onnxsim ``source``; verify against the source model and, when given, the checkpoint."""
    from exporter.runners.torch import TorchRunner

    source, source_runner, spec, output = onnx_source(source, output, loaded, ".sim.onnx", "simplified")

    def references() -> dict:
        refs = {"source onnx": source_runner}
        if loaded is not None:
            refs["pytorch"] = TorchRunner(loaded.module)
        return refs

    opts = verify_options or VerifyOptions()
    result = run_stage(
        lambda staging, name: simplify.export(source, staging, name),
        output,
        verifier(references, spec, opts, "onnx"),
        keep_failed,
        progress,
        "simplify",
    )
    if write and result.files:
        write_report(build_report([result], loaded, spec), result.path)
    return result
