"""FP16 versions of an ONNX model.

The graph in float16 with fp32 inputs/outputs by default; nodes whose weights or calibration
activations exceed the fp16 range are kept in fp32 (or reported as an error), and so are
multiplications by a constant that lies wholly below fp16's normal range (timm's LayerScale
starts at 1e-5, which fp16 holds as a subnormal with a few significant bits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.errors import BadInputError, ExportError, root_cause
from exporter.stages import StageOutput
from exporter.targets.onnx.tools import copy_metadata, intermediate_bytes_per_sample, load_onnx, quiet, samples_within_budget

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14  # 6.1e-5: smaller float16 values are subnormal and lose significant bits
MULTIPLYING_OPS = ("Mul", "Div", "MatMul", "Gemm", "Conv")
OVERFLOW_POLICIES = ("keep", "fail", "ignore")


def _activation_maxima(model, batches, structure=None, workdir: Path | None = None) -> dict[str, float]:
    """Max |value| of every float intermediate tensor over the batches (fp32 run).

    ``structure`` (the graph without weights) and ``workdir`` are for models past protobuf's
    2 GB: shapes are inferred on the graph alone, and the probe goes through a file.
    """
    import onnx
    import onnxruntime as ort

    from exporter.targets.onnx.stage import save_model

    inferred = onnx.shape_inference.infer_shapes(structure if structure is not None else model)
    typed = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    outputs = len(model.graph.output)
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:  # every float tensor becomes an output, on the model itself (no copy of the weights)
        for out in node.output:
            info = typed.get(out)
            if out and out not in existing and info is not None and info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                model.graph.output.append(info)
                existing.add(out)
    try:
        if structure is not None and workdir is not None:
            # past 2 GB: through a file with external data (saving that way empties a model's tensors: save a copy)
            probe = onnx.ModelProto()
            probe.CopyFrom(model)
            written = [Path(workdir) / f for f in save_model(probe, Path(workdir) / "fp16-probe.onnx")]
            del probe
            try:
                session = ort.InferenceSession(str(written[0]), providers=["CPUExecutionProvider"])
            finally:
                for f in written:
                    f.unlink(missing_ok=True)
        else:
            session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    finally:
        del model.graph.output[outputs:]
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    rows = samples_within_budget(intermediate_bytes_per_sample(inferred), most=1 << 20)
    maxima: dict[str, float] = {}
    for chunk in (batch[i : i + rows] for batch in batches for i in range(0, len(batch), rows)):
        for tensor_name, value in zip(names, session.run(None, {input_name: chunk})):
            if value.size and np.issubdtype(value.dtype, np.floating):
                peak = float(np.nanmax(np.abs(value)))
                maxima[tensor_name] = max(maxima.get(tensor_name, 0.0), peak)
    return maxima


def find_fp16_overflow(model, batches, structure=None, workdir: Path | None = None) -> tuple[list[str], dict[str, float]]:
    """Nodes whose weights or observed activations leave the fp16 range (|x| > 65504)."""
    from onnx import numpy_helper

    big_weights = {
        i.name: float(np.abs(numpy_helper.to_array(i)).max())
        for i in model.graph.initializer
        if i.data_type == 1 and np.prod(i.dims) > 0 and float(np.abs(numpy_helper.to_array(i)).max()) > FP16_MAX
    }
    maxima = _activation_maxima(model, batches, structure, workdir)
    offenders: dict[str, float] = {}
    for node in model.graph.node:
        peaks = [big_weights[i] for i in node.input if i in big_weights]
        peaks += [maxima[o] for o in node.output if maxima.get(o, 0.0) > FP16_MAX]
        # a node *consuming* an overflowing tensor must stay fp32 too, or the value is clipped on the way in
        peaks += [maxima[i] for i in node.input if maxima.get(i, 0.0) > FP16_MAX]
        if peaks:
            offenders[node.name] = max(peaks)
    return list(offenders), offenders


def find_fp16_underflow(model) -> dict[str, float]:
    """Multiplying nodes whose constant factor lies wholly below fp16's smallest normal value.

    Measured on timm's MobileNetV4-hybrid (LayerScale gammas of 1e-5, random init): the fp16 model
    was 0.014 x range off; keeping its 30 such Mul nodes in fp32 brought that to 0.0003.
    """
    from onnx import numpy_helper

    constants = {i.name: i for i in model.graph.initializer if i.data_type == 1}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == 1:
                    constants[node.output[0]] = attr.t
    found: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type not in MULTIPLYING_OPS:
            continue
        for name in node.input:
            if name in constants and np.prod(constants[name].dims) > 0:
                peak = float(np.abs(numpy_helper.to_array(constants[name])).max())
                if 0.0 < peak < FP16_MIN_NORMAL:
                    found[node.name] = peak
    return found


def _drop_roundtrip_casts(model) -> int:
    """Remove fp32 -> fp16 -> fp32 Cast pairs.

    The float16 converter wraps every blocked node in casts, so two adjacent fp32 nodes still
    pass their tensor through fp16 between them; an overflowing value would become inf there.
    """
    import onnx

    def cast_to(node) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed = 0
    dead = set()
    for first in list(graph.node):
        if cast_to(first) != onnx.TensorProto.FLOAT16 or first.output[0] in outputs:
            continue
        users = consumers.get(first.output[0], [])
        if not users or any(cast_to(u) != onnx.TensorProto.FLOAT or u.output[0] in outputs for u in users):
            continue
        source = first.input[0]
        for second in users:
            for node in graph.node:
                for i, name in enumerate(node.input):
                    if name == second.output[0]:
                        node.input[i] = source
            dead.add(id(second))
            removed += 1
        dead.add(id(first))
    keep = [n for n in graph.node if id(n) not in dead]
    del graph.node[:]
    graph.node.extend(keep)
    produced = (
        {name for node in keep for name in node.output} | {i.name for i in graph.input} | {i.name for i in graph.initializer}
    )
    infos = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return removed


def export_fp16(
    source: Path,
    staging_dir: Path,
    name: str,
    batches,
    keep_io_types: bool = True,
    on_overflow: str = "keep",
) -> StageOutput:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if on_overflow not in OVERFLOW_POLICIES:
        raise BadInputError(f"--fp16-overflow must be one of {', '.join(OVERFLOW_POLICIES)}")
    from exporter.targets.onnx.stage import has_external_data, save_model

    model = load_onnx(source, external_data=False)  # the whole model, unless its weights live in a .data file
    structure = None
    if has_external_data(model):
        structure, model = model, load_onnx(source)
    overflow_nodes, peaks = find_fp16_overflow(model, batches, structure, staging_dir) if on_overflow != "ignore" else ([], {})
    if overflow_nodes and on_overflow == "fail":
        shown = ", ".join(f"{n} (|x| up to {peaks[n]:.3g})" for n in overflow_nodes[:5])
        raise ExportError(
            f"{len(overflow_nodes)} node(s) exceed the fp16 range of ±65504: {shown}; "
            "use --fp16-overflow keep to leave them in fp32"
        )
    underflow = find_fp16_underflow(model) if on_overflow != "ignore" else {}
    kept = overflow_nodes + [n for n in underflow if n not in overflow_nodes]
    try:
        with quiet():
            if structure is not None:  # past 2 GB the converter cannot infer shapes itself
                del model.graph.value_info[:]
                model.graph.value_info.extend(onnx.shape_inference.infer_shapes(structure).graph.value_info)
            converted = convert_float_to_float16(
                model, keep_io_types=keep_io_types, node_block_list=kept or None, disable_shape_infer=structure is not None
            )
    except Exception as exc:
        raise ExportError(f"fp16 conversion failed: {root_cause(exc)}") from exc
    # only an overflowing value must not pass through fp16 between two fp32 nodes
    removed = _drop_roundtrip_casts(converted) if overflow_nodes else 0
    if kept:
        # the converter types every weight float16 in value_info, also those it left fp32 for kept nodes:
        # a stale entry that shape inference (ours, TensorRT's, OpenVINO's) refuses. Weights carry their own type.
        weights = {i.name for i in converted.graph.initializer}
        infos = [v for v in converted.graph.value_info if v.name not in weights]
        del converted.graph.value_info[:]
        converted.graph.value_info.extend(infos)
    copy_metadata(model, converted, {"cnnexport.precision": "fp16"})
    files = save_model(converted, Path(staging_dir) / name)
    return StageOutput(
        files=files,
        details={
            "precision": "fp16",
            "keep_io_types": keep_io_types,
            "overflow_policy": on_overflow,
            "kept_fp32_nodes": kept,
            "overflow_peaks": {k: round(v, 1) for k, v in peaks.items()},
            "underflow_factors": {k: float(f"{v:.3g}") for k, v in underflow.items()},
            "roundtrip_casts_removed": removed,
        },
    )


def make(req) -> StageOutput:
    """The fp16 row's stage: the overflow probe runs on calibration samples when given, else seeded random inputs."""
    from exporter.inputs import random_inputs

    opts = req.options
    probe = (
        list(req.calibration.subset(0, 64, "overflow probe").batches(16))
        if req.calibration is not None
        else [random_inputs(req.spec, 8, req.seed).array]
    )
    return export_fp16(req.source, req.staging, req.name, probe, opts.keep_io_types, opts.overflow)
