"""Where an ONNX artifact goes wrong, layer by layer, in the PyTorch model's own names.

Both sides run on the same batch. PyTorch: a forward hook on every leaf module records its
output in call order. ONNX (fp32, fp16, int8 QDQ): every layer with weights (Conv, Gemm, MatMul)
is named by its weight initializer — the exporters and onnxruntime's quantizer keep parameter
paths (``layer2.0.conv1.weight``, ``…weight_quantized``) — and the value compared is what the
next layer reads: the layer's output after its Quantize/Dequantize pair when there is one, so
an activation that int8 crushes shows at the layer that produces it. Each ONNX tensor is paired
with the PyTorch output it should equal: the weight's module, or the BatchNorm / activation
executed right after it when the exporter folded them in (the closest match wins; the table
says which). Every layer is judged by the artifact's pass rule (max error / range, cosine);
the first that exceeds it — all layers before it were within — is the first divergent layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from exporter.errors import BadInputError

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# modules an exporter folds into the layer before them (their output is the layer's ONNX output)
FOLDED = ("BatchNorm", "ReLU", "ReLU6", "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "GELU", "Identity", "LeakyReLU", "Mish")


@dataclass
class Layer:
    index: int
    module: str  # the PyTorch module owning the layer's weights
    output_of: str  # the PyTorch module whose output the compared tensor equals (a folded BatchNorm/activation)
    op: str
    node: str  # the ONNX node: what `quantize --exclude` takes
    tensor: str  # the ONNX tensor compared (after its Q/DQ pair for int8)
    max_rel_err: float
    cosine: float
    status: str  # pass | fail (by the artifact's rule)
    channel_err: float = 0.0  # the worst channel's error / that channel's own range (a crushed channel shows here)
    upstream: tuple[str, ...] = ()  # the weighted layers (ONNX node names) whose outputs it reads


def _weight_module(model, node, initializers: set[str], producers: dict) -> str | None:
    """The parameter path behind a node's weight input: layer1.0.conv1.weight(_quantized) -> layer1.0.conv1."""
    if len(node.input) < 2:
        return None
    name = node.input[1]
    for _ in range(3):  # through DequantizeLinear / Cast / Transpose to the initializer
        if name in initializers:
            break
        producer = producers.get(name)
        if producer is None or producer.op_type not in ("DequantizeLinear", "Cast", "Transpose"):
            return None
        name = producer.input[0]
    if name not in initializers or ".weight" not in name:
        return None
    return name.split(".weight")[0]


def _seen(tensor: str, consumers: dict) -> str:
    """What the next layer reads: the Dequantize output of the tensor's Q/DQ pair, else the tensor."""
    for q in consumers.get(tensor, []):
        if q.op_type == "QuantizeLinear":
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return tensor


def onnx_layers(path: Path):
    """(model, [(node, module, tensor compared)]) in execution order."""
    import onnx

    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    layers = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS:
            module = _weight_module(model, node, initializers, producers)
            if module is not None:
                layers.append((node, module, _seen(node.output[0], consumers)))
    return model, layers, producers


def upstream(node, producers: dict, weighted: set[str]) -> tuple[str, ...]:
    """The nearest weighted layers behind ``node``'s data input (through Q/DQ, activations, pools, adds)."""
    found, todo, seen = [], [node.input[0]], set()
    while todo:
        tensor = todo.pop()
        producer = producers.get(tensor)
        if producer is None or producer.name in seen:
            continue
        seen.add(producer.name)
        if producer.name in weighted:
            found.append(producer.name)
        else:
            todo += [i for i in producer.input if i in producers]
    return tuple(found)


def _run_onnx(model, tensors: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    from exporter.targets.onnx.runner import FP16_DISABLED_OPTIMIZERS

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
            existing.add(name)
    fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    session = ort.InferenceSession(
        model.SerializeToString(),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=FP16_DISABLED_OPTIMIZERS if fp16 else None,
    )
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch, np.float32)})
    return {n: np.asarray(v, np.float32) for n, v in zip(names, values)}


def _run_torch(module, batch: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """[(module path, class name, output)] of every leaf module, in call order."""
    import torch

    calls: list = []
    handles = []
    for name, sub in module.named_modules():
        if name and not any(True for _ in sub.children()):

            def hook(mod, inputs, output, name=name):
                if isinstance(output, torch.Tensor):
                    # a copy: an in-place activation (ReLU(inplace=True)) would rewrite the tensor afterwards
                    calls.append((name, type(mod).__name__, output.detach().float().cpu().numpy().copy()))

            handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
    finally:
        for h in handles:
            h.remove()
    return calls


def _compare(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    span = float(ref.max() - ref.min()) or 1.0
    err = float(np.abs(out.astype(np.float64) - ref).max()) / span
    a = ref.reshape(ref.shape[0], -1).astype(np.float64)
    b = out.reshape(out.shape[0], -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.where((na == 0) & (nb == 0), 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-300))
    return err, float(cos.min())


def _pair(module: str, out: np.ndarray, calls: list) -> tuple[str, float, float, np.ndarray] | None:
    """The PyTorch output ``out`` equals: ``module``'s, or a folded BatchNorm/activation right after it (closest)."""
    starts = [i for i, (name, _, _) in enumerate(calls) if name == module]
    best = None
    for start in starts:
        for name, cls, value in calls[start : start + 4]:
            if name != module and not any(cls.startswith(f) for f in FOLDED):
                break
            if value.shape != out.shape:
                continue
            # a functional relu/relu6 (not a module, so not hooked) folded into the layer: its output is clamped
            variants = [(name, value)]
            if out.min() >= 0 > value.min():
                variants += [(f"relu({name})", np.maximum(value, 0)), (f"relu6({name})", np.clip(value, 0, 6))]
            for label, candidate in variants:
                err, cos = _compare(candidate, out)
                if best is None or err < best[1]:
                    best = (label, err, cos, candidate)
    return best


def layer_table(artifact: Path, module, batch: np.ndarray, tolerance, calls: list | None = None) -> list[Layer]:
    """Every weighted layer of ``artifact`` (ONNX) against ``module`` (PyTorch) on ``batch``, in execution order."""
    artifact = Path(artifact)
    if artifact.suffix.lower() != ".onnx":
        raise BadInputError(f"cnnexport debug compares ONNX models layer by layer; {artifact.name} is not one")
    model, layers, producers = onnx_layers(artifact)
    if not layers:
        raise BadInputError(
            f"{artifact.name}: no layer's weights carry a parameter name (…weight), so no layer can be "
            "mapped back to the model; export it with cnnexport (dynamo exporter)"
        )
    weighted = {node.name for node, _, _ in layers}
    values = _run_onnx(model, [t for _, _, t in layers], batch)
    calls = calls if calls is not None else _run_torch(module, batch)
    table: list[Layer] = []
    for node, owner, tensor in layers:
        paired = _pair(owner, values[tensor], calls)
        if paired is None:
            continue  # no PyTorch output of that shape: not comparable (e.g. a reshaped Gemm input)
        output_of, err, cos, reference = paired
        ok = err <= tolerance.max_rel_err and cos >= tolerance.min_cosine
        table.append(
            Layer(
                len(table),
                _user_name(owner, module),
                _user_name(output_of, module),
                node.op_type,
                node.name,
                tensor,
                err,
                cos,
                "pass" if ok else "fail",
                _channel_err(reference, values[tensor]),
                upstream(node, producers, weighted),
            )
        )
    return table


def _user_name(name: str, module) -> str:
    """A module path as the user's model names it: without the multi-output wrapper's ``model.`` (exporter/flat_model.py)."""
    from exporter.outputs import unwrap

    if unwrap(module) is module:
        return name
    return name.replace("(model.", "(").removeprefix("model.")


def _channel_err(ref: np.ndarray, out: np.ndarray) -> float:
    if ref.ndim < 2:
        return 0.0
    axes = tuple(i for i in range(ref.ndim) if i != 1)
    span = max(float(ref.max() - ref.min()), 1e-12)
    ranges = np.maximum(ref.max(axis=axes) - ref.min(axis=axes), 1e-3 * span)
    return float((np.abs(out.astype(np.float64) - ref).max(axis=axes) / ranges).max())


def first_divergent(table: list[Layer], tolerance) -> Layer | None:
    """The first layer past the rule whose inputs were within it.

    A layer's inputs can be wrong per channel while its output still looks fine overall: int8
    activations quantized per tensor crush the small channels of an output one channel
    dominates, and only the next layer (which weighs every channel) shows it. So when the
    first failing layer reads a layer whose worst channel is past the rule, that one is named.
    """
    failing = next((layer for layer in table if layer.status == "fail"), None)
    if failing is None:
        return None
    by_node = {layer.node: layer for layer in table}
    crushed = [by_node[n] for n in failing.upstream if n in by_node and by_node[n].channel_err > tolerance.max_rel_err]
    return min(crushed, key=lambda layer: layer.index) if crushed else failing


def advice(layer: Layer, precision: str, calls: list | None = None) -> str:
    """What to do about the first divergent layer."""
    if precision == "int8":
        hint = f"keep it in float (--exclude {layer.node}) or let --fallback auto choose"
        crushed = (
            f" (its worst output channel is off by {layer.channel_err:.2f}x that channel's range)"
            if layer.status == "pass"
            else ""
        )
        spread = _channel_spread(calls, layer) if calls is not None else None
        if spread is not None and spread > 20:
            return (
                f"one output channel of {layer.output_of} spans {spread:.0f}x the median channel, so per-tensor int8 "
                f"activations crush the others{crushed}: use --equalize, or {hint}"
            )
        return f"int8 loses this layer's output{crushed}: {hint}"
    if precision == "fp16":
        return "keep overflowing or underflowing nodes in fp32 (--fp16-overflow keep), or export this model in fp32"
    return (
        "this layer computes differently from PyTorch: check the checkpoint and --arch, or export with "
        "--exporter legacy; a changed weight in the artifact itself shows here too"
    )


def _channel_spread(calls: list, layer: Layer) -> float | None:
    target = layer.output_of.split("(")[-1].rstrip(")")  # relu(layer2.bn1) -> layer2.bn1
    value = next((v for name, _, v in calls if name in (target, "model." + target)), None)  # model.: a multi-output wrapper
    if value is None or value.ndim < 2:
        return None
    ranges = np.abs(value).max(axis=tuple(i for i in range(value.ndim) if i != 1))
    median = float(np.median(ranges))
    return float(ranges.max() / median) if median > 0 else None


def explain(artifact: Path, module, batch: np.ndarray, precision: str, tolerance) -> dict:
    """The JSON `cnnexport debug` prints: every layer, the first divergent one and what to do."""
    calls = _run_torch(module, batch)  # once: the table and the advice read the same PyTorch outputs
    table = layer_table(artifact, module, batch, tolerance, calls)
    first = first_divergent(table, tolerance)
    return {
        "artifact": str(artifact),
        "precision": precision,
        "rule": f"per layer: |artifact - reference| <= {tolerance.max_rel_err:g} x reference range, "
        f"cosine >= {tolerance.min_cosine:g}",
        "inputs": int(batch.shape[0]),
        "layers": [asdict(layer) for layer in table],
        "first_divergent": None if first is None else {**asdict(first), "advice": advice(first, precision, calls)},
    }


def describe(first: dict | None) -> str:
    if first is None:
        return "no layer exceeds the rule"
    return (
        f"first divergent layer: {first['module']} ({first['op']} {first['node']}, output of {first['output_of']}): "
        f"max err/range {first['max_rel_err']:.3g}, cosine {first['cosine']:.4f}; {first['advice']}"
    )


def precision_of(artifact: Path) -> str:
    """The rule an ONNX artifact declares (cnnexport.precision), fp32 when it declares none."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(artifact), load_external_data=False).metadata_props}
    return props.get("cnnexport.precision", "fp32") if props.get("cnnexport.precision") in ("fp16", "int8") else "fp32"


def inputs_for(where: str | None, spec, samples: int) -> np.ndarray:
    """The batch to compare on: the first ``samples`` of a data source, else seeded random inputs."""
    from exporter.inputs import open_source, random_inputs

    if where is None:
        return random_inputs(spec, samples, 0).array
    return open_source(where, spec, 0, split="test").take(samples)


def render(result: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{escape(Path(result['artifact']).name)} vs PyTorch, layer by layer ({result['inputs']} inputs)",
        title_justify="left",
    )
    for col in ("#", "module", "output of", "op", "node", "max err/range", "cosine", "status"):
        table.add_column(col, justify="right" if col in ("#", "max err/range", "cosine") else "left", overflow="fold")
    first = (result["first_divergent"] or {}).get("index")
    for layer in result["layers"]:
        colour = "green" if layer["status"] == "pass" else "red"
        mark = " <- first divergent" if layer["index"] == first else ""
        table.add_row(
            str(layer["index"]),
            escape(layer["module"]),
            escape(layer["output_of"]),
            layer["op"],
            escape(layer["node"]),
            f"{layer['max_rel_err']:.2e}",
            f"{layer['cosine']:.5f}",
            f"[{colour}]{layer['status']}{mark}[/{colour}]",
        )
    console.print(table)
    console.print(f"[dim]pass rule {escape(result['precision'])} {escape(result['rule'])}[/dim]")
    console.print(escape(describe(result["first_divergent"])))


def plot(result: dict, path: Path) -> Path:
    """Error against depth, log scale, with the rule's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exporter.fsutil import save_figure

    layers = result["layers"]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(layers) + 3), 4))
    ax.semilogy(
        [layer["index"] for layer in layers],
        [max(layer["max_rel_err"], 1e-9) for layer in layers],
        marker="o",
        label="max err / range",
    )
    limit = float(result["rule"].split("<= ")[1].split(" x")[0])
    ax.axhline(limit, color="red", linestyle="--", label=f"{result['precision']} rule")
    ax.set_xticks([layer["index"] for layer in layers])
    ax.set_xticklabels([layer["module"] for layer in layers], rotation=60, ha="right", fontsize=7)
    ax.set_title(f"{Path(result['artifact']).name}: error against depth")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
