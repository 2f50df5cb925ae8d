"""onnxruntime's quantization pre-processing, with every node named: the graph the int8 stage quantizes and
--exclude (and the rescue) name nodes in."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.errors import ExportError, root_cause
from exporter.targets.onnx.tools import quiet

SYMBOLIC_SHAPE_DUMP = "sym_shape_infer_temp.onnx"


def _remove_symbolic_shape_dump(before: set[str]) -> None:
    """onnxruntime's symbolic shape inference, when incomplete, saves its model into the current directory
    (``sym_shape_infer_temp.onnx`` plus a uuid-named ``.data`` file: 52 MB for timm's HRNet-W18-small):
    a user's working directory is no place for them. Only files that were not there before go."""
    dump = Path(SYMBOLIC_SHAPE_DUMP)
    if dump.name in before or not dump.is_file():
        return
    import onnx

    try:
        model = onnx.load(str(dump), load_external_data=False)
        locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    except Exception:  # noqa: BLE001 - a damaged dump is removed all the same
        locations = set()
    for name in (dump.name, *sorted(locations)):
        if name not in before and "/" not in name:
            Path(name).unlink(missing_ok=True)


def merged_names(source_model, pre: Path):
    """A graph holding the source's nodes and the pre-processed model's: --exclude may name either (the rescue names
    nodes pre-processing made, such as the HardSigmoid and Mul a HardSwish becomes)."""
    import onnx

    merged = onnx.ModelProto()
    merged.graph.node.extend(source_model.graph.node)
    merged.graph.node.extend(onnx.load(str(pre), load_external_data=False).graph.node)
    return merged


def name_unnamed_nodes(path: Path) -> None:
    """Give the nodes pre-processing left unnamed a name (``pre_<op>_<position>``), so --exclude can reach them.

    Measured: onnxruntime's pre-processing turns a HardSwish into an unnamed HardSigmoid and Mul; the
    Mul is quantized, so a layer reading it could not be kept in float by name.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    unnamed = [(i, node) for i, node in enumerate(model.graph.node) if not node.name]
    if not unnamed:
        return
    for i, node in unnamed:
        node.name = f"pre_{node.op_type}_{i}"
    onnx.save(model, str(path))


def preprocessed(source: Path, folder: Path, target: str = "cpu") -> Path:
    """The graph the int8 stage quantizes (pre-processed, nodes named), written in ``folder``: what --exclude names."""
    pre = Path(folder) / "preprocessed.onnx"
    preprocess(source, pre, target, external=False)
    return pre


def preprocess(source: Path, pre: Path, target: str, external: bool) -> str | None:
    """onnxruntime's quantization pre-processing into ``pre``; why its symbolic shape inference failed, if it did."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre_external = (
        {"save_as_external_data": True, "all_tensors_to_one_file": True, "external_data_location": pre.name + ".data"}
        if external
        else {}
    )
    before = set(os.listdir("."))
    try:
        with quiet():
            quant_pre_process(str(source), str(pre), skip_optimization=(target == "tensorrt"), **pre_external)
    except Exception as exc:  # noqa: BLE001
        # onnxruntime's symbolic shape inference trips over some graphs (Swin V2's Expand:
        # "object of type 'NoneType' has no len()"); ONNX's own shape inference is enough for QDQ.
        symbolic_failure = root_cause(exc)
        _remove_symbolic_shape_dump(before)
        try:
            with quiet():
                quant_pre_process(
                    str(source), str(pre), skip_optimization=(target == "tensorrt"), skip_symbolic_shape=True, **pre_external
                )
        except Exception:  # noqa: BLE001
            raise ExportError(f"onnxruntime's quantization pre-processing failed: {symbolic_failure}") from exc
        name_unnamed_nodes(pre)
        return symbolic_failure
    name_unnamed_nodes(pre)
    return None
