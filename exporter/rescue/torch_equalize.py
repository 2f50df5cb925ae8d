"""Cross-layer equalization of a PyTorch module before INT8 (ExecuTorch, LiteRT): the torch twin of
exporter/rescue/equalize.py, which does it to an ONNX graph.

The same rule (Nagel et al. 2019): for Conv1 [-> BatchNorm] -> f -> Conv2/Linear, with f positively
homogeneous per channel (ReLU, pooling, dropout, flatten into a Linear), scaling channel i of the
first layer's output by 1/s_i and the second layer's input channel i by s_i keeps the function;
s_i = sqrt(r1_i / r2_i) gives both layers the same per-channel weight range. The pairs are read off
``torch.export``'s graph (every tensor on the way has one reader, so a residual branch is never
scaled behind its back); the weights are found by their parameter names, so the equalized module
keeps every module name `--exclude` and the rescue use. With a BatchNorm after Conv1 its
gamma and beta carry the 1/s (the quantizer folds it into the conv); else Conv1's weight and bias.
"""

from __future__ import annotations

import copy

from exporter.rescue.equalize import CHECK_BATCH, CHECK_SAMPLES, CONVERGED, DEAD, MAX_SCALE, SWEEPS, record_fp32_check

# aten ops passed through between the two layers: f(s x) = s f(x) per channel for s > 0
# (ReLU6 / hardtanh clips at a fixed value and is not; nor are Hardswish, SiLU, GELU, ...)
HOMOGENEOUS = {
    "relu", "leaky_relu", "dropout", "alias", "clone", "contiguous",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
}  # fmt: skip
TO_2D = {"flatten", "view", "reshape"}  # (N, C, H, W) -> (N, C*H*W): only a Linear may follow


def _op(node) -> str:
    """'aten.conv2d.default' -> 'conv2d'"""
    parts = str(node.target).split(".")
    return parts[1] if len(parts) > 2 else str(node.target)


def _param(exported, node) -> str | None:
    """The state-dict name of a parameter / buffer placeholder (None for anything else)."""
    signature = exported.graph_signature
    name = getattr(node, "name", None)
    return signature.inputs_to_parameters.get(name) or signature.inputs_to_buffers.get(name)


def _shape(node) -> tuple[int, ...]:
    value = node.meta.get("val")
    return tuple(int(d) for d in value.shape) if value is not None else ()


def _only_reader(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _first_layer(exported, node) -> dict | None:
    """{weight, bias} of a conv2d / linear call (its output channel is axis 0 of the weight)."""
    if node.op != "call_function" or _op(node) not in ("conv2d", "linear"):
        return None
    weight = _param(exported, node.args[1])
    bias = _param(exported, node.args[2]) if len(node.args) > 2 and node.args[2] is not None else None
    return {"weight": weight, "bias": bias} if weight else None


def find_pairs(exported) -> tuple[list[dict], dict[str, int]]:
    """The eligible (first, second) layer pairs of an ExportedProgram, and why others were skipped (counts)."""
    pairs: list[dict] = []
    skipped: dict[str, int] = {}
    for node in exported.graph.nodes:
        first = _first_layer(exported, node)
        if first is None:
            continue
        current, batchnorm, spatial = node, None, 1
        while True:
            reader = _only_reader(current)
            if reader is None or reader.op != "call_function":
                why = "several readers" if reader is None and len(current.users) > 1 else "no layer after"
                break
            op = _op(reader)
            if op == "batch_norm" and batchnorm is None and current is node:
                batchnorm = {k: _param(exported, reader.args[i]) for k, i in (("weight", 1), ("bias", 2))}
            elif op.rstrip("_") in HOMOGENEOUS:
                pass
            elif op in TO_2D and len(_shape(current)) == 4 and len(_shape(reader)) == 2:
                shape = _shape(current)
                spatial = shape[2] * shape[3]
            elif op in ("conv2d", "linear") and reader.args[0] is current:
                second = _param(exported, reader.args[1])
                groups = reader.args[6] if op == "conv2d" and len(reader.args) > 6 else 1
                why = "grouped second layer" if groups != 1 else ""
                if not why and second and (op == "linear" or spatial == 1):
                    pairs.append({"first": first, "batchnorm": batchnorm, "second": second, "spatial": spatial, "op": op})
                    why = ""
                elif not why:
                    why = "reshape before a convolution"
                break
            else:
                why = f"through {op}"
                break
            current = reader
        if why:
            skipped[why] = skipped.get(why, 0) + 1
    return pairs, skipped


def equalizable_pairs(module, example) -> int:
    """How many pairs ``equalize_module`` would scale (0: equalization cannot help, a rescue skips that fix)."""
    import torch

    try:
        return len(find_pairs(torch.export.export(copy.deepcopy(module).eval(), (example,), strict=False))[0])
    except Exception:  # noqa: BLE001 - a model torch.export refuses is refused by the target itself, with its reason
        return 0


def _ranges_first(state: dict, pair: dict):
    """Per output channel: max |W1| x |gamma / sqrt(var + eps)| (the folded weight the quantizer sees)."""
    w1 = state[pair["first"]["weight"]]
    r1 = w1.detach().abs().reshape(w1.shape[0], -1).amax(1)
    norm = pair["batchnorm"]
    if norm and norm["weight"]:
        prefix = norm["weight"].rsplit(".", 1)[0]
        var = state[f"{prefix}.running_var"]
        r1 = r1 * (state[norm["weight"]].detach().abs() / (var + 1e-5).sqrt())
    return r1


def _ranges_second(state: dict, pair: dict):
    """Per input channel of the second layer: max |W2| over what that channel feeds."""
    w2 = state[pair["second"]].detach()
    if pair["op"] == "linear":
        return w2.abs().reshape(w2.shape[0], -1, pair["spatial"]).amax(dim=(0, 2))
    return w2.abs().transpose(0, 1).reshape(w2.shape[1], -1).amax(1)


def _apply(state: dict, pair: dict, s) -> None:
    import torch

    with torch.no_grad():
        norm = pair["batchnorm"]
        carriers = [norm["weight"], norm["bias"]] if norm and norm["weight"] else [pair["first"]["weight"], pair["first"]["bias"]]
        for name in filter(None, carriers):
            tensor = state[name]
            tensor /= s.reshape(-1, *([1] * (tensor.ndim - 1)))
        w2 = state[pair["second"]]
        if pair["op"] == "linear":
            w2 *= s.repeat_interleave(pair["spatial"]).reshape(1, -1)
        else:
            w2 *= s.reshape(1, -1, *([1] * (w2.ndim - 2)))


def equalize_module(module, example, sweeps: int = SWEEPS, max_scale: float = MAX_SCALE):
    """An equalized copy of ``module`` (eval mode) and the report `--equalize` records."""
    import torch

    equalized = copy.deepcopy(module).eval()
    exported = torch.export.export(equalized, (example,), strict=False)
    pairs, skipped = find_pairs(exported)
    state = dict(equalized.named_parameters()) | dict(equalized.named_buffers())
    totals = [torch.ones(state[p["first"]["weight"]].shape[0]) for p in pairs]
    done = 0
    for done in range(1, sweeps + 1 if pairs else 1):  # noqa: B007 - read after the loop: the sweeps made
        largest = 0.0
        for pair, total in zip(pairs, totals):
            r1, r2 = _ranges_first(state, pair), _ranges_second(state, pair)
            live = (r1 > DEAD * r1.max()) & (r2 > DEAD * r2.max())
            s = torch.where(live, (r1.clamp_min(1e-30) / r2.clamp_min(1e-30)).sqrt(), torch.ones_like(r1))
            s = (total * s).clamp(1.0 / max_scale, max_scale) / total
            total *= s
            _apply(state, pair, s)
            largest = max(largest, float(s.log().abs().max()))
        if largest < CONVERGED:
            break
    scales = torch.cat(totals) if totals else torch.ones(1)
    report = {
        "pairs": len(pairs),
        "skipped": dict(sorted(skipped.items())),
        "pairs_skipped": sum(skipped.values()),
        "sweeps": done if pairs else 0,
        "max_scale": float(torch.maximum(scales, 1 / scales).max()),
        "equalized": [
            f"{p['first']['weight'].removesuffix('.weight')} -> {p['second'].removesuffix('.weight')}" for p in pairs[:50]
        ],
    }
    return equalized, report


def equalized_module(module, example, calibration):
    """``equalize_module`` checked: the fp32 function unchanged within the fp32 rule on the first calibration
    samples, else ExportError (nothing applied). -> (module to quantize, report)."""
    import numpy as np
    import torch

    equalized, report = equalize_module(module, example)
    worst = 0.0
    with torch.no_grad():
        for batch in calibration.subset(0, CHECK_SAMPLES, "equalization check").batches(CHECK_BATCH):
            x = torch.from_numpy(np.ascontiguousarray(batch))
            for a, b in zip(_outputs(module(x)), _outputs(equalized(x))):
                a, b = a.double(), b.double()
                span = float(a.max() - a.min()) or 1.0
                worst = max(worst, float((a - b).abs().max()) / span if torch.isfinite(b).all() else float("inf"))
    record_fp32_check(report, worst, "build")
    return equalized, report


def _module(parameter: str) -> str:
    """'features.0.weight' -> 'features.0'"""
    return parameter.rsplit(".", 1)[0]


def _outputs(value) -> list:
    """Every tensor a model returns (a tensor, a tuple / list, or a dict of them)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for item in value for t in _outputs(item)]
