"""Simplified ONNX via onnxsim (constant folding, redundant-node removal)."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import BadInputError, ExportError
from exporter.stages import StageOutput


def export(source: Path, staging_dir: Path, name: str) -> StageOutput:
    import onnx
    import onnxsim

    try:
        model = onnx.load(str(source))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors vary
        raise BadInputError(f"{source} is not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    before = len(model.graph.node)
    metadata = [(p.key, p.value) for p in model.metadata_props]
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxsim failed on {source}: {str(exc).splitlines()[0][:300]}") from exc
    if not ok:
        raise ExportError(f"onnxsim could not validate its simplification of {source}")
    del simplified.metadata_props[:]
    for key, value in metadata:
        prop = simplified.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save_model(simplified, str(Path(staging_dir) / name))
    return StageOutput(
        files=[name],
        details={"nodes_before": before, "nodes_after": len(simplified.graph.node), "onnxsim": onnxsim.__version__},
    )

