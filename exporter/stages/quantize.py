"""Static INT8 (QDQ) and FP16 versions of an ONNX model.

INT8 targets:
  cpu       uint8 activations + int8 per-channel weights, QDQ; after onnxruntime's
            pre-processing (shape inference + graph optimization). On x86 this is the
            combination onnxruntime runs fast (int8/int8 QDQ gave no gain here; see
            benchmarks/quantize.py).
  tensorrt  symmetric int8 activations and weights (zero points 0) in explicit QDQ form with
            float biases, which TensorRT 10+ consumes directly, plus a TensorRT calibration cache for
            implicit-quantization builds. No graph optimization, so tensor names match
            the source model the cache refers to.
FP16: the graph in float16 with fp32 inputs/outputs by default; nodes whose weights or
calibration activations exceed the fp16 range are kept in fp32 (or reported as an error), and
so are multiplications by a constant that lies wholly below fp16's normal range (timm's
LayerScale starts at 1e-5, which fp16 holds as a subnormal with a few significant bits).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
from pathlib import Path

import numpy as np

from exporter.errors import BadInputError, ExportError, root_cause
from exporter.stages import StageOutput

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14  # 6.1e-5: smaller float16 values are subnormal and lose significant bits
MULTIPLYING_OPS = ("Mul", "Div", "MatMul", "Gemm", "Conv")
METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("cpu", "tensorrt")
OVERFLOW_POLICIES = ("keep", "fail", "ignore")
DEFAULT_TRT_VERSION = "10.8.0"
# Calibration and the fp16 overflow probe read every intermediate tensor of a batch at once; this
# bounds how many bytes of them one run may produce (ViT-H/14: an estimated 1.5 GB per 224x224 sample).
INTERMEDIATE_BUDGET = 2 << 30
_ELEMENT_BYTES = {1: 4, 10: 2, 11: 8, 16: 2}  # float, float16, double, bfloat16


def _load(path: Path, external_data: bool = True):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors vary
        raise BadInputError(f"{path} is not a readable ONNX model ({root_cause(exc)})") from None


def _copy_metadata(source, target, extra: dict) -> None:
    from exporter.stages.onnx import set_metadata_props

    values = {p.key: p.value for p in source.metadata_props}
    values.update({k: str(v) for k, v in extra.items()})
    set_metadata_props(target, values)


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs and prints progress; keep our stdout clean for --json."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def resolve_exclude(model, exclude: list[str]) -> tuple[list[str], list[str]]:
    """Split --exclude entries into node names and op types; unknown entries are an error."""
    names = {n.name for n in model.graph.node}
    op_types = {n.op_type for n in model.graph.node}
    nodes, ops = [], []
    for item in exclude:
        if item in op_types:
            ops.append(item)
        elif item in names:
            nodes.append(item)
        else:
            raise BadInputError(
                f"--exclude {item!r} is neither a node name nor an op type of this model "
                f"(op types: {', '.join(sorted(op_types))})"
            )
    return nodes, ops


def attention_nodes(model) -> list[str]:
    """Softmax nodes and the MatMuls that multiply two computed tensors (attention's Q·Kᵀ, scores·V).

    Static int8 on that path loses too much: softmax scores span orders of magnitude within one
    tensor, and both MatMul inputs get rounded. cnnexport keeps these nodes in float (measured on
    a random Swin V2-T, digits calibration: held-out cosine 0.943 with them quantized, 0.959
    without). They hold no weights and little of the compute; CNNs have none of them.
    """
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "Softmax" or (n.op_type == "MatMul" and not any(i in constants for i in n.input))]


def residual_stream_nodes(model) -> list[str]:
    """LayerNormalization nodes and the Adds that feed one or consume one (the residual stream).

    LayerNorm rescales every token to unit variance, so a token that is small next to the others
    (ViT's class token) keeps almost nothing of a per-tensor uint8 scale and comes back as noise;
    the residual Adds around it carry that stream from block to block. Pre-norm (ViT: Add ->
    LayerNorm) and post-norm (Swin V2: LayerNorm -> Add) both covered. Measured (random init,
    photo calibration, 16 held-out samples): ViT-B/32 cosine 0.69 -> 0.997 at 2.4x the fp32
    speed (2.5x with them quantized). Swin V2 gains little (S: 0.977-0.985 either way, at the int8
    rule's 0.98 edge). Models without LayerNorm: none.
    """
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    norm_inputs = {i for n in norms for i in n.input}
    norm_outputs = {o for n in norms for o in n.output}
    adds = [n.name for n in model.graph.node
            if n.op_type == "Add" and (norm_inputs.intersection(n.output) or norm_outputs.intersection(n.input))]
    return [n.name for n in norms] + adds


def intermediate_bytes_per_sample(model) -> int:
    """Bytes of all float intermediate tensors for one sample, from the shapes in value_info.

    The first dimension counts as the batch (1); other unknown dimensions count as 1, so this
    is a lower bound for graphs whose shapes ONNX cannot infer.
    """
    total = 0
    for info in list(model.graph.value_info) + list(model.graph.output):
        tensor = info.type.tensor_type
        size = _ELEMENT_BYTES.get(tensor.elem_type)
        if size is None or not tensor.HasField("shape"):
            continue
        for dim in list(tensor.shape.dim)[1:]:
            size *= dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else 1
        total += size
    return total


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


def even_batch_size(samples: int, most: int) -> int:
    """The largest batch size <= most that divides the sample count (1 for a prime count)."""
    return max(d for d in range(1, max(1, min(most, samples)) + 1) if samples % d == 0) if samples > 0 else most


def samples_within_budget(per_sample: int, most: int, budget: int | None = None) -> int:
    """How many samples one run may take so its intermediates stay within the budget (>= 1)."""
    budget = INTERMEDIATE_BUDGET if budget is None else budget
    return max(1, min(most, budget // max(per_sample, 1)))


def _quantizable_op_types(excluded_ops: list[str]) -> list[str] | None:
    if not excluded_ops:
        return None
    from onnxruntime.quantization.registry import QDQRegistry

    return [op for op in QDQRegistry if op not in excluded_ops]


def trt_version_code(version: str) -> int:
    """'10.8.0' -> 100800 (major*10000 + minor*100 + patch), as TensorRT 10 numbers itself."""
    try:
        parts = [int(p) for p in version.split(".")[:3]] + [0, 0]
    except ValueError:
        raise BadInputError(f"--trt-version expects MAJOR.MINOR.PATCH, got {version!r}") from None
    major, minor, patch = parts[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def activation_scales(model) -> dict[str, float]:
    """tensor name -> scale of every activation QuantizeLinear in a QDQ model."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    scales: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        scale = inits.get(node.input[1])
        if scale is None:
            continue
        value = numpy_helper.to_array(scale)
        if value.size == 1:
            scales[node.input[0]] = float(value.reshape(()))
    return scales


def calibration_cache_text(scales: dict[str, float], trt_version: str) -> str:
    """TensorRT's text calibration cache: a header, then `tensor: <big-endian float32 hex>` lines."""
    lines = [f"TRT-{trt_version_code(trt_version)}-EntropyCalibration2"]
    for name in sorted(scales):
        lines.append(f"{name}: {struct.pack('>f', scales[name]).hex()}")
    return "\n".join(lines) + "\n"


def parse_calibration_cache(text: str) -> tuple[str, dict[str, float]]:
    """Inverse of calibration_cache_text (used by tests and the TensorRT stage)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise BadInputError("not a TensorRT calibration cache: the first line must be TRT-<version>-<algorithm>")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, hexval = line.rpartition(": ")
        try:
            if not sep:
                raise ValueError
            scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
        except (ValueError, struct.error):
            raise BadInputError(
                f"calibration cache line {number} is not `tensor: <8 hex digits>` (a big-endian float32 scale): {line[:80]!r}"
            ) from None
    return lines[0], scales


def export_int8(
    source: Path,
    staging_dir: Path,
    name: str,
    calibration,
    target: str = "cpu",
    method: str = "minmax",
    per_channel: bool = True,
    exclude: list[str] | tuple[str, ...] = (),
    trt_version: str = DEFAULT_TRT_VERSION,
) -> StageOutput:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from exporter.inputs import OrtCalibrationReader

    if target not in TARGETS:
        raise BadInputError(f"--target must be one of {', '.join(TARGETS)}")
    if method not in METHODS:
        raise BadInputError(f"--method must be one of {', '.join(METHODS)}")
    from exporter.stages.onnx import has_external_data, save_model

    source_model = _load(source, external_data=False)  # the graph; weights past 2 GB stay on disk
    external = has_external_data(source_model)
    node_names, op_types = resolve_exclude(source_model, list(exclude))
    staging_dir = Path(staging_dir)
    pre = staging_dir / "preprocessed.onnx"
    pre_external = {"save_as_external_data": True, "all_tensors_to_one_file": True,
                    "external_data_location": pre.name + ".data"} if external else {}
    symbolic_failure = None
    before = set(os.listdir("."))
    try:
        with _quiet():
            quant_pre_process(str(source), str(pre), skip_optimization=(target == "tensorrt"), **pre_external)
    except Exception as exc:  # noqa: BLE001
        # onnxruntime's symbolic shape inference trips over some graphs (Swin V2's Expand:
        # "object of type 'NoneType' has no len()"); ONNX's own shape inference is enough for QDQ.
        symbolic_failure = root_cause(exc)
        _remove_symbolic_shape_dump(before)
        try:
            with _quiet():
                quant_pre_process(str(source), str(pre), skip_optimization=(target == "tensorrt"), skip_symbolic_shape=True,
                                  **pre_external)
        except Exception:  # noqa: BLE001
            raise ExportError(f"onnxruntime's quantization pre-processing failed: {symbolic_failure}") from exc

    graph = onnx.load(str(pre), load_external_data=False)
    float_attention = [n for n in attention_nodes(graph) if n not in node_names]
    float_residual = [n for n in residual_stream_nodes(graph) if n not in node_names]
    symmetric = target == "tensorrt"
    activation_type = QuantType.QInt8 if symmetric else QuantType.QUInt8
    weight_type = QuantType.QInt8
    per_sample = intermediate_bytes_per_sample(graph)
    batch_size = samples_within_budget(per_sample, most=16)
    if method in ("entropy", "percentile"):
        # onnxruntime's histogram collector stacks the batches of a chunk into one array: a last,
        # shorter batch breaks it ("inhomogeneous shape"); batches of a size that divides the count do not
        batch_size = even_batch_size(len(calibration), batch_size)
    # Up to 4 batches per chunk. Not one chunk for everything: onnxruntime 1.32's entropy calibrator
    # has 128 bins for 128 quantized bins, so over one histogram it returns exactly min/max (measured on
    # the digits ResNet); its chunk-merged histograms are what makes entropy differ from min/max at all.
    chunk_samples = min(4 * batch_size, samples_within_budget(per_sample, 64))
    reader = OrtCalibrationReader(calibration, source_model.graph.input[0].name, batch_size=batch_size)
    extra_options = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        # TensorRT's ONNX parser refuses an int32 bias behind DequantizeLinear ("only activation types
        # allowed as input to this layer", onnx/onnx-tensorrt#850, NVIDIA/TensorRT#3360): it wants the
        # float bias and folds it itself. onnxruntime's CPU kernels take either.
        "QuantizeBias": not symmetric,
        # batches per calibration chunk: onnxruntime keeps a whole chunk's intermediates in memory
        "CalibStridedMinMax": reader.stride(most=max(1, chunk_samples // batch_size)),
    }
    if method == "percentile":
        extra_options["CalibPercentile"] = 99.999
    target_path = staging_dir / name
    try:
        with _quiet():
            quantize_static(
                str(pre),
                str(target_path),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=_quantizable_op_types(op_types),
                per_channel=per_channel,
                reduce_range=False,
                activation_type=activation_type,
                weight_type=weight_type,
                nodes_to_exclude=(node_names + float_attention + float_residual) or None,
                calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                  "percentile": CalibrationMethod.Percentile}[method],
                use_external_data_format=external,
                extra_options=extra_options,
            )
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001
        hint = ""
        if "shared mode is not supported for weight" in str(exc):
            # measured on timm's PoolFormer-S12: the dynamo graph trips the quantizer, the legacy one passes (cosine 0.996)
            hint = "; this graph from the dynamo exporter trips onnxruntime's quantizer: export with --exporter legacy and quantize that"
        raise ExportError(f"onnxruntime static quantization failed: {root_cause(exc)}{hint}") from exc

    quantized = onnx.load(str(target_path))
    details = {
        "precision": "int8",
        "target": target,
        "format": "QDQ",
        "activation_type": "int8" if symmetric else "uint8",
        "weight_type": "int8",
        "symmetric_activations": symmetric,
        "per_channel": per_channel,
        "method": method,
        "calibration": calibration.description,
        "calibration_samples": len(calibration),
        "calibration_batches": reader.batches_read,
        "calibration_batch_size": batch_size,
        "intermediate_mb_per_sample": round(per_sample / 2**20, 3),
        "excluded_nodes": node_names,
        "excluded_op_types": op_types,
        "float_attention_nodes": len(float_attention),
        "float_residual_nodes": len(float_residual),
        "preprocess": ("shape inference only" if symmetric else "shape inference + graph optimization")
        + (f" (ONNX shape inference only: onnxruntime's symbolic shape inference failed: {symbolic_failure})" if symbolic_failure else ""),
        "quantize_linear_nodes": sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node),
        "onnxruntime_options": {k: v for k, v in extra_options.items()},
    }
    _copy_metadata(source_model, quantized, {"cnnexport.precision": "int8", "cnnexport.int8_target": target})
    files = save_model(quantized, target_path)
    if symmetric:
        cache_name = name.removesuffix(".onnx") + ".calib"
        scales = activation_scales(quantized)
        (staging_dir / cache_name).write_text(calibration_cache_text(scales, trt_version))
        files.append(cache_name)
        details.update(calibration_cache=cache_name, calibration_cache_tensors=len(scales), trt_version=trt_version)
    return StageOutput(files=files, details=details)


def _activation_maxima(model, batches, structure=None, workdir: Path | None = None) -> dict[str, float]:
    """Max |value| of every float intermediate tensor over the batches (fp32 run).

    ``structure`` (the graph without weights) and ``workdir`` are for models past protobuf's
    2 GB: shapes are inferred on the graph alone, and the probe goes through a file.
    """
    import onnx
    import onnxruntime as ort

    from exporter.stages.onnx import save_model

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
    produced = {name for node in keep for name in node.output} | {i.name for i in graph.input} | {i.name for i in graph.initializer}
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
    from exporter.stages.onnx import has_external_data, save_model

    model = _load(source, external_data=False)  # the whole model, unless its weights live in a .data file
    structure = None
    if has_external_data(model):
        structure, model = model, _load(source)
    overflow_nodes, peaks = (find_fp16_overflow(model, batches, structure, staging_dir)
                             if on_overflow != "ignore" else ([], {}))
    if overflow_nodes and on_overflow == "fail":
        shown = ", ".join(f"{n} (|x| up to {peaks[n]:.3g})" for n in overflow_nodes[:5])
        raise ExportError(
            f"{len(overflow_nodes)} node(s) exceed the fp16 range of ±65504: {shown}; "
            "use --fp16-overflow keep to leave them in fp32"
        )
    underflow = find_fp16_underflow(model) if on_overflow != "ignore" else {}
    kept = overflow_nodes + [n for n in underflow if n not in overflow_nodes]
    try:
        with _quiet():
            if structure is not None:  # past 2 GB the converter cannot infer shapes itself
                del model.graph.value_info[:]
                model.graph.value_info.extend(onnx.shape_inference.infer_shapes(structure).graph.value_info)
            converted = convert_float_to_float16(model, keep_io_types=keep_io_types, node_block_list=kept or None,
                                                 disable_shape_infer=structure is not None)
    except Exception as exc:  # noqa: BLE001
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
    _copy_metadata(model, converted, {"cnnexport.precision": "fp16"})
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
