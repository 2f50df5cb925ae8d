"""A TensorRT lint: would TensorRT's ONNX parser take this model? Checked without TensorRT.

Rules, each from TensorRT's own documentation:
- every op against onnx-tensorrt's operator support matrix (``tensorrt_support_10.json``, parsed
  from onnx-tensorrt docs/operators.md of the 10.x releases): an op marked N (QLinearConv,
  ConvInteger, MatMulInteger, DynamicQuantizeLinear … — what onnxruntime's QOperator format
  writes) has no importer, onnx/onnx-tensorrt#560; an op in another domain needs a plugin;
- the data (first) input's element type against the op's supported types;
- Q/DQ: only int8 quantized tensors with zero points 0; no int32 bias behind a
  DequantizeLinear ("only activation types allowed as input to this layer", onnx/onnx-tensorrt#850,
  NVIDIA/TensorRT#3360);
- dynamic shapes: only the batch dimension of an input may be dynamic (the build's optimization
  profile covers the batch);
- the model's opset within the table's range.

Where the table cannot tell (an op it does not list, a type shape inference could not find), the
finding is ``unknown``, never ``pass``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

TABLE_FILE = Path(__file__).with_name("tensorrt_support_10.json")
# ONNX TensorProto element types, named as the support table names them
TYPE_NAMES = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    10: "FP16",
    11: "DOUBLE",
    16: "BF16",
    17: "FP8",
    18: "FP8",
    19: "FP8",
    20: "FP8",
    22: "INT4",
    4: "UINT16",
    5: "INT16",
    12: "UINT32",
    13: "UINT64",
}


@dataclass(frozen=True)
class Finding:
    node: str
    op: str
    verdict: str  # violation | unknown
    reason: str


@lru_cache(maxsize=1)
def support_table() -> dict:
    return json.loads(TABLE_FILE.read_text())


def _element_types(model) -> dict[str, int]:
    import onnx

    types = {i.name: i.data_type for i in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - types then stay unknown where the graph does not declare them
        inferred = model
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _zero_point_nonzero(model, name: str) -> bool | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return bool(numpy_helper.to_array(init).any())
    return None


def lint(model_or_path, trt_version: str = "10") -> dict:
    """{"status": pass|fail|unknown, "table", "checked_nodes", "violations", "unknown"} for one ONNX model."""
    import onnx

    model = (
        onnx.load(str(model_or_path), load_external_data=False)
        if not isinstance(model_or_path, onnx.ModelProto)
        else model_or_path
    )
    table = support_table()
    low, high = table["opset_range"]
    findings: list[Finding] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not low <= opset <= high:
        findings.append(Finding("(model)", "opset", "unknown", f"opset {opset} is outside the table's range {low}-{high}"))
    types = _element_types(model)
    findings += _input_findings(model, types)
    for node in model.graph.node:
        findings += _node_findings(model, node, table["operators"], types)
    # the most decisive first: an op with no importer at all, then Q/DQ rules, types, shapes
    rank = {"no importer": 0, "plugin": 0, "Q/DQ": 1, "DequantizeLinear": 1, "zero point": 1, "takes": 2, "dynamic": 3}
    findings.sort(key=lambda f: min((r for k, r in rank.items() if k in f.reason), default=4))
    violations = [asdict(f) for f in findings if f.verdict == "violation"]
    unknown = [asdict(f) for f in findings if f.verdict == "unknown"]
    return {
        "status": "fail" if violations else "unknown" if unknown else "pass",
        "table": table["source"],
        "target": str(trt_version),
        "checked_nodes": len(model.graph.node),
        "violations": violations,
        "unknown": unknown,
    }


def _input_findings(model, types: dict) -> list[Finding]:
    """Graph inputs with a dynamic dimension besides the batch: the optimization profile cannot cover them."""
    findings = []
    for graph_input in model.graph.input:
        if graph_input.name in types and any(i.name == graph_input.name for i in model.graph.initializer):
            continue
        dims = graph_input.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if i > 0 and not d.HasField("dim_value")]
        if dynamic:
            findings.append(
                Finding(
                    graph_input.name,
                    "input",
                    "violation",
                    f"dimension(s) {dynamic} of input {graph_input.name} are dynamic; "
                    "the optimization profile covers the batch only",
                )
            )
    return findings


def _node_findings(model, node, ops: dict, types: dict) -> list[Finding]:
    """What the support table says of one node: its op's importer, its Q/DQ rules or its input type."""
    name = node.name or f"{node.op_type}({', '.join(node.output)})"
    if node.domain not in ("", "ai.onnx"):
        return [
            Finding(
                name,
                f"{node.domain}.{node.op_type}",
                "violation",
                f"op {node.op_type} of domain {node.domain} has no TensorRT importer (it would need a plugin)",
            )
        ]
    row = ops.get(node.op_type)
    if row is None:
        return [Finding(name, node.op_type, "unknown", "not in TensorRT's operator support table")]
    if not row["supported"]:
        return [Finding(name, node.op_type, "violation", f"TensorRT's ONNX parser has no importer for {node.op_type}")]
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return _qdq_findings(model, node, name, types)
    if not (node.input and node.input[0]):
        return []
    kind = types.get(node.input[0])
    if kind is None:
        return [Finding(name, node.op_type, "unknown", f"the type of input {node.input[0]} is not known")]
    if row["types"] and TYPE_NAMES.get(kind, str(kind)) not in row["types"]:
        return [
            Finding(
                name,
                node.op_type,
                "violation",
                f"input {node.input[0]} is {TYPE_NAMES.get(kind, kind)}; "
                f"TensorRT's {node.op_type} takes {', '.join(row['types'])}",
            )
        ]
    return []


def _qdq_findings(model, node, name: str, types: dict) -> list[Finding]:
    out = []
    if node.op_type == "DequantizeLinear":
        kind = types.get(node.input[0])
        if kind == 6:  # int32
            out.append(
                Finding(
                    name,
                    node.op_type,
                    "violation",
                    "an int32 (bias) tensor behind DequantizeLinear: TensorRT's parser allows only activation types "
                    "here; keep biases float (cnnexport quantize --target tensorrt)",
                )
            )
        elif kind == 2:  # uint8
            out.append(
                Finding(
                    name,
                    node.op_type,
                    "violation",
                    "uint8 Q/DQ: TensorRT takes int8 with zero point 0 (cnnexport quantize --target tensorrt)",
                )
            )
        elif kind is None:
            out.append(Finding(name, node.op_type, "unknown", f"the type of {node.input[0]} is not known"))
    else:
        zp_type = types.get(node.input[2]) if len(node.input) > 2 and node.input[2] else 2  # no zero point: uint8
        if zp_type == 2:
            out.append(
                Finding(
                    name,
                    node.op_type,
                    "violation",
                    "uint8 Q/DQ: TensorRT takes int8 with zero point 0 (cnnexport quantize --target tensorrt)",
                )
            )
    if len(node.input) > 2 and node.input[2]:
        nonzero = _zero_point_nonzero(model, node.input[2])
        if nonzero:
            out.append(
                Finding(name, node.op_type, "violation", f"zero point {node.input[2]} is not 0; TensorRT's Q/DQ are symmetric")
            )
        elif nonzero is None:
            out.append(Finding(name, node.op_type, "unknown", f"zero point {node.input[2]} is not a constant"))
    return out


def describe_violation(result: dict) -> str:
    first = result["violations"][0]
    more = f" (and {len(result['violations']) - 1} more)" if len(result["violations"]) > 1 else ""
    return f"node {first['node']} ({first['op']}): {first['reason']}{more}"
