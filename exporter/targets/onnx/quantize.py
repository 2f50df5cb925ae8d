"""Static INT8 (QDQ) versions of an ONNX model.

INT8 targets:
  cpu       uint8 activations + int8 per-channel weights, QDQ; after onnxruntime's
            pre-processing (shape inference + graph optimization). On x86 this is the
            combination onnxruntime runs fast (int8/int8 QDQ gave no gain here; see
            benchmarks/quantize.py).
  tensorrt  symmetric int8 activations and weights (zero points 0) in explicit QDQ form with
            float biases, which TensorRT 10+ consumes directly, plus a TensorRT calibration cache for
            implicit-quantization builds. No graph optimization, so tensor names match
            the source model the cache refers to.
FP16 is stages/fp16.py; the calibration cache format is tensorrt/calibration_cache.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.errors import BadInputError, ExportError, root_cause
from exporter.stages import StageOutput
from exporter.targets.onnx.preprocess import merged_names, preprocess
from exporter.targets.onnx.tools import (
    copy_metadata,
    float_head_nodes,
    intermediate_bytes_per_sample,
    load_onnx,
    quiet,
    samples_within_budget,
)
from exporter.targets.tensorrt.calibration_cache import activation_scales, calibration_cache_text
from exporter.targets.tensorrt.sidecar import FLOAT_NODES_KEY
from exporter.targets.tensorrt.version import DEFAULT_VERSION as DEFAULT_TRT_VERSION

METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("cpu", "tensorrt")


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
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Softmax" or (n.op_type == "MatMul" and not any(i in constants for i in n.input))
    ]


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
    adds = [
        n.name
        for n in model.graph.node
        if n.op_type == "Add" and (norm_inputs.intersection(n.output) or norm_outputs.intersection(n.input))
    ]
    return [n.name for n in norms] + adds


def host_lacks_vnni() -> bool:
    """An x86 CPU without VNNI (AVX2 or AVX-512F alone), where onnxruntime's int8 kernels saturate.

    There MLAS multiplies u8 x s8 with vpmaddubsw, which adds pairs of products into int16 with
    saturation: with 8-bit weights a large activation overflows (measured here on an AVX2-only
    EPYC: a digits ResNet's INT8 fell below the cosine rule). onnxruntime's documented remedy
    is 7-bit weights (``reduce_range``), which cannot overflow. CPUs with VNNI or AMX, and ARM, are
    left at 8 bits.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    if not flags or "avx2" not in flags:
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def even_batch_size(samples: int, most: int) -> int:
    """The largest batch size <= most that divides the sample count (1 for a prime count)."""
    return max(d for d in range(1, max(1, min(most, samples)) + 1) if samples % d == 0) if samples > 0 else most


def _quantizable_op_types(excluded_ops: list[str]) -> list[str] | None:
    if not excluded_ops:
        return None
    from onnxruntime.quantization.registry import QDQRegistry

    return [op for op in QDQRegistry if op not in excluded_ops]


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
    equalize: bool = False,
) -> StageOutput:
    import onnx

    from exporter.inputs import OrtCalibrationReader

    if target not in TARGETS:
        raise BadInputError(f"--target must be one of {', '.join(TARGETS)}")
    if method not in METHODS:
        raise BadInputError(f"--method must be one of {', '.join(METHODS)}")
    from exporter.targets.onnx.stage import has_external_data, save_model

    source_model = load_onnx(source, external_data=False)  # the graph; weights past 2 GB stay on disk
    external = has_external_data(source_model)
    staging_dir = Path(staging_dir)
    pre = staging_dir / "preprocessed.onnx"
    symbolic_failure = preprocess(source, pre, target, external)
    node_names, op_types = resolve_exclude(merged_names(source_model, pre), list(exclude))
    equalization = None
    if equalize:  # cross-layer equalization of the pre-processed (BatchNorm-folded) graph, its fp32 function checked
        from exporter.rescue.equalize import equalize_file

        pre, equalization = equalize_file(pre, calibration)
    graph = onnx.load(str(pre), load_external_data=False)
    kept_float = _kept_in_float(graph, source_model, node_names)
    symmetric = target == "tensorrt"
    reduce_range = host_lacks_vnni()
    per_sample, batch_size, chunk_samples = _calibration_batches(graph, len(calibration), method)
    reader = OrtCalibrationReader(calibration, source_model.graph.input[0].name, batch_size=batch_size)
    extra_options = _onnxruntime_options(symmetric, method, reader.stride(most=max(1, chunk_samples // batch_size)))
    target_path = staging_dir / name
    excluded = node_names + [n for nodes in kept_float.values() for n in nodes]
    _quantize_static(
        pre, target_path, reader, method, per_channel, reduce_range, symmetric, op_types, excluded, external, extra_options
    )

    quantized = onnx.load(str(target_path))
    details = _int8_details(
        quantized,
        target,
        method,
        per_channel,
        reduce_range,
        calibration,
        reader,
        per_sample,
        (node_names, op_types),
        kept_float,
        symbolic_failure,
        extra_options,
    )
    if equalization is not None:
        details["equalization"] = equalization
    metadata = {"cnnexport.precision": "int8", "cnnexport.int8_target": target}
    if node_names:  # the nodes kept in float on purpose: a TensorRT kit / sidecar names them
        metadata[FLOAT_NODES_KEY] = json.dumps(node_names)
    copy_metadata(source_model, quantized, metadata)
    files = save_model(quantized, target_path)
    if symmetric:
        cache = _write_calibration_cache(quantized, staging_dir, name, trt_version)
        files.append(cache["calibration_cache"])
        details.update(cache)
    return StageOutput(files=files, details=details)


def _int8_details(
    quantized,
    target: str,
    method: str,
    per_channel: bool,
    reduce_range: bool,
    calibration,
    reader,
    per_sample: int,
    excluded: tuple[list[str], list[str]],
    kept_float: dict[str, list[str]],
    symbolic_failure: str | None,
    extra_options: dict[str, Any],
) -> dict:
    """The stage's details, in the report's order: what was asked, what the host and the data made of it, what came out."""
    symmetric = target == "tensorrt"
    node_names, op_types = excluded
    return {
        "precision": "int8",
        "target": target,
        "format": "QDQ",
        "activation_type": "int8" if symmetric else "uint8",
        "weight_type": "int8",
        "symmetric_activations": symmetric,
        "reduce_range": reduce_range,  # 7-bit weights: this host's CPU has no VNNI (host_lacks_vnni)
        "per_channel": per_channel,
        "method": method,
        "calibration": calibration.description,
        "calibration_samples": len(calibration),
        "calibration_batches": reader.batches_read,
        "calibration_batch_size": reader.batch_size,
        "intermediate_mb_per_sample": round(per_sample / 2**20, 3),
        "excluded_nodes": node_names,
        "excluded_op_types": op_types,
        "float_attention_nodes": len(kept_float["attention"]),
        "float_residual_nodes": len(kept_float["residual"]),
        "float_detect_head_nodes": len(kept_float["detect_head"]),
        "preprocess": ("shape inference only" if symmetric else "shape inference + graph optimization")
        + (
            f" (ONNX shape inference only: onnxruntime's symbolic shape inference failed: {symbolic_failure})"
            if symbolic_failure
            else ""
        ),
        "quantize_linear_nodes": sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node),
        "onnxruntime_options": {k: v for k, v in extra_options.items()},
    }


def _write_calibration_cache(quantized, staging_dir: Path, name: str, trt_version: str) -> dict:
    """TensorRT's calibration cache beside the Q/DQ model (for implicit-quantization builds); its details."""
    cache_name = name.removesuffix(".onnx") + ".calib"
    scales = activation_scales(quantized)
    (staging_dir / cache_name).write_text(calibration_cache_text(scales, trt_version))
    return {"calibration_cache": cache_name, "calibration_cache_tensors": len(scales), "trt_version": trt_version}


def _kept_in_float(graph, source_model, excluded: list[str]) -> dict[str, list[str]]:
    """{attention, residual, detect_head: nodes} that stay in float besides the ones --exclude names."""
    return {
        "attention": [n for n in attention_nodes(graph) if n not in excluded],
        "residual": [n for n in residual_stream_nodes(graph) if n not in excluded],
        "detect_head": [n for n in float_head_nodes(graph, source_model) if n not in excluded],
    }


def _calibration_batches(graph, samples: int, method: str) -> tuple[int, int, int]:
    """(intermediate bytes per sample, batch size, samples per calibration chunk) that fit the memory budget."""
    per_sample = intermediate_bytes_per_sample(graph)
    batch_size = samples_within_budget(per_sample, most=16)
    if method in ("entropy", "percentile"):
        # onnxruntime's histogram collector stacks the batches of a chunk into one array: a last,
        # shorter batch breaks it ("inhomogeneous shape"); batches of a size that divides the count do not
        batch_size = even_batch_size(samples, batch_size)
    # Up to 4 batches per chunk. Not one chunk for everything: onnxruntime 1.32's entropy calibrator
    # has 128 bins for 128 quantized bins, so over one histogram it returns exactly min/max (measured on
    # the digits ResNet); its chunk-merged histograms are what makes entropy differ from min/max at all.
    chunk_samples = min(4 * batch_size, samples_within_budget(per_sample, 64))
    return per_sample, batch_size, chunk_samples


def _onnxruntime_options(symmetric: bool, method: str, chunk_batches: int) -> dict[str, Any]:
    """quantize_static's extra_options for the target (recorded in the details as onnxruntime_options)."""
    extra_options: dict[str, Any] = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        # TensorRT's ONNX parser refuses an int32 bias behind DequantizeLinear ("only activation types
        # allowed as input to this layer", onnx/onnx-tensorrt#850, NVIDIA/TensorRT#3360): it wants the
        # float bias and folds it itself. onnxruntime's CPU kernels take either.
        "QuantizeBias": not symmetric,
        # batches per calibration chunk: onnxruntime keeps a whole chunk's intermediates in memory
        "CalibStridedMinMax": chunk_batches,
    }
    if method == "percentile":
        extra_options["CalibPercentile"] = 99.999
    return extra_options


def _quantize_static(
    pre: Path,
    target_path: Path,
    reader,
    method: str,
    per_channel: bool,
    reduce_range: bool,
    symmetric: bool,
    op_types: list[str],
    excluded: list[str],
    external: bool,
    extra_options: dict[str, Any],
) -> None:
    """onnxruntime's quantize_static to QDQ; its failures become ExportError with a hint where one is known."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        with quiet():
            quantize_static(
                str(pre),
                str(target_path),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=_quantizable_op_types(op_types),
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded or None,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[method],
                use_external_data_format=external,
                extra_options=extra_options,
            )
    except BadInputError:
        raise
    except Exception as exc:
        hint = ""
        if "shared mode is not supported for weight" in str(exc):
            # measured on timm's PoolFormer-S12: the dynamo graph trips the quantizer, the legacy one passes (cosine 0.996)
            hint = (
                "; this graph from the dynamo exporter trips onnxruntime's quantizer: "
                "export with --exporter legacy and quantize that"
            )
        raise ExportError(f"onnxruntime static quantization failed: {root_cause(exc)}{hint}") from exc


def make(req) -> StageOutput:
    """The int8 row's stage: Q/DQ for onnxruntime on the CPU."""
    return _make(req, "cpu")


def make_tensorrt(req) -> StageOutput:
    """The int8_tensorrt row's stage: symmetric Q/DQ with a calibration cache, as TensorRT takes it."""
    return _make(req, "tensorrt")


def _make(req, target: str) -> StageOutput:
    opts = req.options
    return export_int8(
        req.source,
        req.staging,
        req.name,
        req.calibration,
        target,
        opts.method,
        opts.per_channel,
        list(opts.exclude),
        opts.trt_version,
        equalize=opts.equalize,
    )
