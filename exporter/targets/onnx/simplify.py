"""Simplified ONNX via onnxsim (constant folding, redundant-node removal)."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import BadInputError, ExportError
from exporter.stages import StageOutput


def export(source: Path, staging_dir: Path, name: str) -> StageOutput:
    """onnxsim from file to file, so models past protobuf's 2 GB (external data) work too."""
    import onnx
    import onnxsim

    from exporter.targets.onnx.stage import has_external_data, save_model

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors vary
        raise BadInputError(f"{source} is not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    before = len(model.graph.node)
    metadata = [(p.key, p.value) for p in model.metadata_props]
    target = Path(staging_dir) / name
    try:
        _, ok = onnxsim.simplify(str(source), output_path=str(target), external_data_threshold="1.9GB")
    except Exception as exc:
        raise ExportError(f"onnxsim failed on {source}: {str(exc).splitlines()[0][:300]}") from exc
    if not ok:
        raise ExportError(f"onnxsim could not validate its simplification of {source}")
    simplified = onnx.load(str(target), load_external_data=False)
    del simplified.metadata_props[:]
    for key, value in metadata:
        prop = simplified.metadata_props.add()
        prop.key, prop.value = key, value
    if has_external_data(simplified):  # past 2 GB onnxsim writes the weights beside it, under a name of its own
        _rename_external_data(simplified, Path(staging_dir), name + ".data")
        onnx.save_model(simplified, str(target))  # the graph; its tensors point at the renamed file
        files = [name, name + ".data"]
    else:
        files = save_model(simplified, target)
    return StageOutput(
        files=files,
        details={
            "nodes_before": before,
            "nodes_after": len(simplified.graph.node),
            "next_steps": [f"nodes: {before} -> {len(simplified.graph.node)}"],
            "onnxsim": onnxsim.__version__,
            "external_data": has_external_data(simplified),
        },
    )


def _rename_external_data(model, folder: Path, data_name: str) -> None:
    """Point every external tensor at ``data_name`` (one file, as cnnexport writes them)."""
    import onnx

    tensors = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    locations = {e.value for t in tensors for e in t.external_data if e.key == "location"}
    if locations == {data_name}:
        return
    if len(locations) == 1:
        (folder / locations.pop()).replace(folder / data_name)
        for tensor in tensors:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data_name
        return
    onnx.load_external_data_for_model(model, str(folder))  # several files: gather them into one
    for location in locations:
        (folder / location).unlink()
    onnx.save_model(
        model, str(folder / "relocated.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
    )
    (folder / "relocated.onnx").unlink()


def make(req) -> StageOutput:
    """The simplify row's stage (onnxsim has no options)."""
    return export(req.source, req.staging, req.name)
