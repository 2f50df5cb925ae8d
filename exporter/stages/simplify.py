"""Simplified ONNX via onnxsim (constant folding, redundant-node removal)."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import BadInputError, ExportError
from exporter.stages import StageOutput


def export(source: Path, staging_dir: Path, name: str) -> StageOutput:
    """onnxsim from file to file, so models past protobuf's 2 GB (external data) work too."""
    import onnx
    import onnxsim

    from exporter.stages.onnx import has_external_data, save_model

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors vary
        raise BadInputError(f"{source} is not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    before = len(model.graph.node)
    metadata = [(p.key, p.value) for p in model.metadata_props]
    target = Path(staging_dir) / name
    try:
        _, ok = onnxsim.simplify(str(source), output_path=str(target), external_data_threshold="1.9GB")
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxsim failed on {source}: {str(exc).splitlines()[0][:300]}") from exc
    if not ok:
        raise ExportError(f"onnxsim could not validate its simplification of {source}")
    simplified = onnx.load(str(target), load_external_data=False)
    del simplified.metadata_props[:]
    for key, value in metadata:
        prop = simplified.metadata_props.add()
        prop.key, prop.value = key, value
    files = save_model(simplified, target)
    if has_external_data(simplified) and len(files) == 1:  # the graph only: weights stay where onnxsim put them
        files.append(name + ".data")
    return StageOutput(
        files=files,
        details={"nodes_before": before, "nodes_after": len(simplified.graph.node), "onnxsim": onnxsim.__version__,
                 "external_data": has_external_data(simplified)},
    )
