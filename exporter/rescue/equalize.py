"""Cross-layer equalization of an ONNX graph before INT8 (Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction").

Per-tensor uint8 activations and per-channel int8 weights lose a layer whose channels have very
different ranges: one channel 400x larger than the others takes the whole uint8 scale of its
activation, and the next layer's weights for that channel round to zero. For two consecutive
layers Conv1 -> [Relu, pooling, ...] -> Conv2 (or Gemm/MatMul), with f positively homogeneous
per channel (f(s x) = s f(x) for s > 0), scaling output channel i of Conv1 by 1/s_i and input
channel i of Conv2 by s_i leaves the function unchanged. s_i = sqrt(r1_i / r2_i) (r1: max |W1|
of output channel i, r2: max |W2| of input channel i) gives both the same range sqrt(r1 r2);
a few sweeps over the graph make a chain of pairs converge. Relu6/Clip, Sigmoid, SiLU, Hardswish
and the like are not homogeneous: such pairs are skipped and counted.

``equalize`` rewrites the weights of a ModelProto; ``equalize_file`` does it to the int8 stage's
pre-processed model (BatchNorm already folded by onnxruntime; what remains is folded here) and
checks with onnxruntime that the fp32 function did not change (the fp32 rule, 1e-4 x range).
"""

from __future__ import annotations

from pathlib import Path

MAX_SCALE = 1e3  # per channel, over all sweeps: beyond it a channel is left at the limit
SWEEPS = 20
CONVERGED = 1e-3  # a sweep whose largest |log s| is below this ends the iteration
DEAD = 1e-8  # a channel whose range is below this x the layer's largest is left alone (s = 1)
CHECK_SAMPLES, CHECK_BATCH = 32, 8

# f(s x) = s f(x) per channel for s > 0: passed through between the two layers
HOMOGENEOUS = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "Identity",
    "Dropout",
}
REDUCE = {"ReduceMean", "ReduceMax", "ReduceSum"}  # homogeneous when the channel axis is kept
TO_2D = {"Flatten", "Reshape"}  # (N, C, ...) -> (N, C*S): only a Gemm/MatMul may follow
# one-input elementwise ops that are not homogeneous: a pair through one is skipped (and counted)
NOT_HOMOGENEOUS = {
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Gelu",
    "Mish",
    "Exp",
    "Log",
    "Sqrt",
    "Erf",
    "ThresholdedRelu",
    "Shrink",
}


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    """Consumers, initializers and shapes of one graph, and the float64 weights being equalized."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.consumers: dict[str, list] = {}
        self.uses: dict[str, int] = {}
        for node in self.graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
                self.uses[i] = self.uses.get(i, 0) + 1
        self.outputs = {o.name for o in self.graph.output}
        self.shapes = {v.name: v.type.tensor_type.shape for v in (*self.graph.value_info, *self.graph.input, *self.graph.output)}
        self.arrays: dict = {}
        self._numpy = numpy_helper

    def weight(self, name: str):
        """The float64 array of a float initializer only one node input uses, else None."""
        import onnx

        if name in self.arrays:
            return self.arrays[name]
        init = self.inits.get(name)
        if init is None or init.data_type != onnx.TensorProto.FLOAT or self.uses.get(name, 0) != 1:
            return None
        self.arrays[name] = self._numpy.to_array(init).astype("float64")
        return self.arrays[name]

    def constant(self, name: str):
        init = self.inits.get(name)
        return None if init is None else self._numpy.to_array(init)

    def write_back(self) -> None:
        for name, array in self.arrays.items():
            self.inits[name].CopyFrom(self._numpy.from_array(array.astype("float32"), name))

    def same_batch(self, a: str, b: str) -> bool:
        """The first dimension of tensors a and b is known to be the same (symbolic or fixed)."""
        if a not in self.shapes or b not in self.shapes or not self.shapes[a].dim or not self.shapes[b].dim:
            return False
        da, db = self.shapes[a].dim[0], self.shapes[b].dim[0]
        return (da.dim_param and da.dim_param == db.dim_param) or (da.dim_value > 0 and da.dim_value == db.dim_value)


def fold_batchnorm(g: _Graph) -> int:
    """Fold each BatchNormalization that is the only consumer of a Conv into the Conv's weight and bias."""
    import numpy as np
    from onnx import numpy_helper

    folded = []
    for conv in g.graph.node:
        if conv.op_type != "Conv" or conv.output[0] in g.outputs or len(g.consumers.get(conv.output[0], [])) != 1:
            continue
        bn = g.consumers[conv.output[0]][0]
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1 or _attr(bn, "training_mode", 0):
            continue
        params = [g.constant(n) for n in bn.input[1:5]]
        w = g.weight(conv.input[1])
        bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        if w is None or any(p is None for p in params) or (bias_name and g.weight(bias_name) is None):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        k = gamma / np.sqrt(var + _attr(bn, "epsilon", 1e-5))
        w *= k.reshape(-1, *([1] * (w.ndim - 1)))
        b = g.arrays[bias_name] if bias_name else np.zeros(w.shape[0])
        b = (b - mean) * k + beta
        if bias_name:
            g.arrays[bias_name][...] = b
        else:
            bias_name = conv.input[1] + ".folded_bn_bias"
            g.graph.initializer.append(numpy_helper.from_array(b.astype(np.float32), bias_name))
            g.inits[bias_name], g.arrays[bias_name], g.uses[bias_name] = g.graph.initializer[-1], b, 1
            while len(conv.input) < 3:
                conv.input.append("")
            conv.input[2] = bias_name
        conv.output[0] = bn.output[0]
        folded.append(bn)
    for bn in folded:
        g.graph.node.remove(bn)
    used = {i for node in g.graph.node for i in node.input}
    for init in [t for bn in folded for t in g.graph.initializer if t.name in bn.input[1:] and t.name not in used]:
        g.graph.initializer.remove(init)
    if folded:  # consumers and uses changed; the float64 weights stay
        arrays = g.arrays
        _Graph.__init__(g, g.model)
        g.arrays = arrays
    return len(folded)


GATES = {"Sigmoid": "SiLU", "HardSigmoid": "Hardswish"}  # x * gate(x): how SiLU/Swish and Hardswish are exported


def _gated(g: _Graph, t: str):
    """x * Sigmoid(x) or x * HardSigmoid(x) on tensor t: (the Mul node, the activation's name), else None."""
    nodes = g.consumers.get(t, [])
    if len(nodes) != 2:
        return None
    gate = next((n for n in nodes if n.op_type in GATES), None)
    mul = next((n for n in nodes if n.op_type == "Mul"), None)
    if gate is None or mul is None or set(mul.input) != {t, gate.output[0]} or len(g.consumers.get(gate.output[0], [])) != 1:
        return None
    return mul, GATES[gate.op_type]


def _axes(g: _Graph, node) -> list[int]:
    """The axes of a Reduce node (attribute before opset 18, input since); [] when unknown."""
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = g.constant(node.input[1])
    return [] if axes is None else [int(a) for a in axes]


def _passes(g: _Graph, node, rank: int) -> bool:
    """Whether a node between the two layers keeps channel i a function of channel i alone, homogeneously."""
    op = node.op_type
    if op in REDUCE:
        axes = _axes(g, node)
        return bool(axes) and all(a % rank >= 2 for a in axes)
    if op == "Flatten":
        return _attr(node, "axis", 1) == 1
    if op == "Reshape":
        shape = g.constant(node.input[1])
        return shape is not None and len(shape) == 2 and g.same_batch(node.input[0], node.output[0])
    if op == "Clip":  # Clip(min=0) without a max is a Relu
        low = g.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, "min")
        high = node.input[2] if len(node.input) > 2 else ""
        return high == "" and _attr(node, "max") is None and low is not None and float(low) == 0.0
    return op in HOMOGENEOUS


def _channel_map(g: _Graph, node, t: str, channels: int):
    """How the input channels of a weighted layer index its weight: (weight name, kind, groups or spatial), or None."""
    if node.op_type == "Conv" and node.input[0] == t and len(node.input) > 1:
        w = g.weight(node.input[1])
        group = _attr(node, "group", 1)
        if w is not None and w.shape[1] * group == channels and w.shape[0] % group == 0:
            return node.input[1], "conv", group
    if node.op_type in ("Gemm", "MatMul") and node.input[0] == t and len(node.input) > 1 and not _attr(node, "transA", 0):
        w = g.weight(node.input[1])
        trans = node.op_type == "Gemm" and _attr(node, "transB", 0)
        if w is not None and w.ndim == 2:
            features = w.shape[1] if trans else w.shape[0]
            if features % channels == 0:
                return node.input[1], "gemm_t" if trans else "gemm", features // channels
    return None


def find_pairs(g: _Graph) -> tuple[list[dict], dict]:
    """Conv1 -> [homogeneous ops] -> Conv2/Gemm/MatMul pairs, and the count of skipped ones by reason."""
    pairs: list[dict] = []
    skipped: dict[str, int] = {}

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    for conv in g.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        w1 = g.weight(conv.input[1])
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        if w1 is None or (bias and g.weight(bias) is None):
            continue
        t, blocked, rank = conv.output[0], None, w1.ndim
        for _ in range(12):
            nodes = g.consumers.get(t, [])
            if t in g.outputs or not nodes:
                break
            gated = _gated(g, t)
            if gated is not None:
                blocked, t = blocked or gated[1], gated[0].output[0]
                continue
            if len(nodes) > 1:
                skip("output feeds several nodes (residual or branch)")
                break
            node = nodes[0]
            # a Conv reads the (N, C, ...) tensor, a Gemm/MatMul a 2-D (N, C*S) one (a MatMul of 4-D would mix W, not C)
            target = _channel_map(g, node, t, w1.shape[0]) if rank == (w1.ndim if node.op_type == "Conv" else 2) else None
            if target is not None:
                if blocked:
                    skip(f"{blocked} between: not positively homogeneous")
                else:
                    pairs.append(
                        {
                            "first": conv.name or conv.output[0],
                            "second": node.name or node.output[0],
                            "w1": conv.input[1],
                            "b1": bias,
                            "w2": target[0],
                            "kind": target[1],
                            "n": target[2],
                        }
                    )
                break
            if node.input[0] != t or any(o and (o in g.outputs or g.consumers.get(o)) for o in node.output[1:]):
                break
            op = node.op_type
            if op in NOT_HOMOGENEOUS:
                if not (op == "Clip" and _passes(g, node, rank)):
                    blocked = blocked or ("Clip (Relu6)" if op == "Clip" else op)
            elif op in REDUCE | TO_2D:
                if not _passes(g, node, rank):
                    break  # a reshape or reduction that mixes channels: no pair here
                rank = 2 if op in TO_2D else rank - (0 if _attr(node, "keepdims", 1) else len(_axes(g, node)))
            elif op not in HOMOGENEOUS:
                break
            t = node.output[0]
    return pairs, skipped


def _second_ranges(w2, kind: str, n: int):
    """Per input channel max |W2|, and the view of W2 that a per-channel scale multiplies: (ranges, view, shape of s)."""
    import numpy as np

    if kind == "conv":
        view = w2.reshape(n, w2.shape[0] // n, w2.shape[1], -1)  # (groups, out per group, in per group, k)
        return np.abs(view).max(axis=(1, 3)).reshape(-1), view, (n, 1, w2.shape[1], 1)
    if kind == "gemm_t":  # (out, C*S)
        view = w2.reshape(w2.shape[0], -1, n)
        return np.abs(view).max(axis=(0, 2)), view, (1, -1, 1)
    view = w2.reshape(-1, n, w2.shape[1])  # (C*S, out)
    return np.abs(view).max(axis=(1, 2)), view, (-1, 1, 1)


def _first_ranges(w1):
    import numpy as np

    return np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)


def range_spread(ranges) -> float:
    """max / min of the non-zero per-channel ranges (1.0 when none)."""

    live = ranges[ranges > 0]
    return float(live.max() / live.min()) if live.size else 1.0


def equalize(model, sweeps: int = SWEEPS, max_scale: float = MAX_SCALE, inplace: bool = False):
    """Equalize every eligible pair of ``model`` (a copy unless ``inplace``) -> (model, report)."""
    import numpy as np
    import onnx

    if not inplace:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    g = _Graph(model)
    folded = fold_batchnorm(g)
    pairs, skipped = find_pairs(g)
    totals = [np.ones(g.arrays[p["w1"]].shape[0]) for p in pairs]
    before = max((range_spread(_first_ranges(g.arrays[p["w1"]])) for p in pairs), default=1.0)
    done = 0
    for done in range(1, sweeps + 1 if pairs else 1):  # noqa: B007 - read after the loop: the sweeps made
        largest = 0.0
        for pair, total in zip(pairs, totals):
            w1, w2 = g.arrays[pair["w1"]], g.arrays[pair["w2"]]
            r1 = _first_ranges(w1)
            r2, view, shape = _second_ranges(w2, pair["kind"], pair["n"])
            live = (r1 > DEAD * r1.max()) & (r2 > DEAD * r2.max())
            s = np.where(live, np.sqrt(np.where(live, r1, 1.0) / np.where(live, r2, 1.0)), 1.0)
            s = np.clip(total * s, 1.0 / max_scale, max_scale) / total  # the cumulative scale stays in range
            total *= s
            w1 /= s.reshape(-1, *([1] * (w1.ndim - 1)))
            if pair["b1"]:
                g.arrays[pair["b1"]] /= s
            view *= s.reshape(shape)
            largest = max(largest, float(np.abs(np.log(s)).max()))
        if largest < CONVERGED:
            break
    g.write_back()
    scales = np.concatenate(totals) if totals else np.ones(1)
    report = {
        "pairs": len(pairs),
        "skipped": dict(sorted(skipped.items())),
        "pairs_skipped": sum(skipped.values()),
        "batchnorm_folded": folded,
        "sweeps": done if pairs else 0,
        "max_scale": float(np.maximum(scales, 1 / scales).max()),
        "channels_at_scale_limit": int((np.abs(np.log(scales)) >= np.log(max_scale) - 1e-9).sum()),
        "channel_range_spread": {
            "before": before,
            "after": max((range_spread(_first_ranges(g.arrays[p["w1"]])) for p in pairs), default=1.0),
        },
        "equalized": [f"{p['first']} -> {p['second']}" for p in pairs[:50]],
    }
    return model, report


def max_difference_over_range(original: Path, equalized: Path, batches) -> float:
    """The largest max|equalized - original| / range(original) over every output and batch (onnxruntime, fp32)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (original, equalized)]
    name = sessions[0].get_inputs()[0].name
    worst = 0.0
    for batch in batches:
        ref, out = (s.run(None, {name: batch}) for s in sessions)
        for a, b in zip(ref, out):
            a, b = a.astype(np.float64), b.astype(np.float64)
            if not np.isfinite(b).all():
                return float("inf")
            worst = max(worst, float(np.abs(a - b).max() / ((a.max() - a.min()) or 1.0)))
    return worst


def equalize_file(pre: Path, calibration) -> tuple[Path, dict]:
    """Equalize the int8 stage's pre-processed model -> (the model to quantize, report).

    The equalized model is written beside ``pre`` and used only when the original and it agree
    within the fp32 rule on the first calibration samples; else ExportError (nothing applied).
    """
    import onnx

    from exporter.targets.onnx.stage import save_model

    model, report = equalize(onnx.load(str(pre)), inplace=True)
    if not report["pairs"] and not report["batchnorm_folded"]:
        report["fp32_max_err_over_range"] = 0.0
        return pre, report
    out = Path(pre).with_name("equalized.onnx")
    save_model(model, out)
    del model
    batches = calibration.subset(0, CHECK_SAMPLES, "equalization check").batches(CHECK_BATCH)
    record_fp32_check(report, max_difference_over_range(Path(pre), out, batches), "quantize")
    return out, report


def record_fp32_check(report: dict, err: float, verb: str) -> None:
    """Put the fp32 change in the report; ExportError (nothing applied) when it is past the fp32 rule."""
    from exporter.errors import ExportError
    from exporter.verify import TOLERANCES

    report["fp32_max_err_over_range"] = err
    limit = TOLERANCES["fp32"].max_rel_err
    if not err <= limit:
        raise ExportError(
            f"cross-layer equalization changed the fp32 function (max error {err:.3g} x range > {limit:g} "
            f"over {report['pairs']} pair(s)) and was not applied; {verb} without --equalize"
        )
