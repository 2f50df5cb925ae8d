"""Which LiteRT ops belong to which PyTorch module: what --exclude and the INT8 rescue keep in float.

litert-torch names every tensor after the module that made it (``HardswishCNN/...Sequential_features/
...BatchNorm2d_1;``: features.1, the BatchNorm folded into the convolution before it), so each
convolution or fully-connected op is traced back to its weighted module (the module itself, or the
last convolution / linear before the BatchNorm or activation its output is named after). A layer
kept in float is its op and the unweighted ops feeding it since the previous weighted op (padding,
activation), each given the NO_QUANTIZE algorithm by its scope (its output tensor names, ';'-joined,
as ai-edge-quantizer matches recipes).
"""

from __future__ import annotations

from exporter.errors import BadInputError

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
WEIGHTED_MODULES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear")


def module_path(tensor_name: str) -> str:
    """'Root/pkg.Sequential_features/pkg.BatchNorm2d_1;...' -> 'features.1' (each segment is Class_attribute)."""
    segments = tensor_name.split(";")[0].split("/")[1:]
    parts = [segment.rsplit(".", 1)[-1].split("_", 1)[1] for segment in segments if "_" in segment.rsplit(".", 1)[-1]]
    return ".".join(parts)


def layer_scopes(interpreter, module) -> dict[str, list[str]]:
    """{weighted module: the scopes of its op and of the unweighted ops feeding it}, in execution order
    (``interpreter``: LiteRT's, on the float model)."""
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    producers = {int(o): op for op in ops for o in op["outputs"]}
    order = [name for name, _ in module.named_modules() if name]
    weighted = [name for name, sub in module.named_modules() if name and type(sub).__name__ in WEIGHTED_MODULES]

    def scope(op) -> str:
        outputs = [names[int(i)] for i in op["outputs"] if int(i) >= 0 and names.get(int(i))]
        return ";".join(outputs) + ";" if outputs else ""

    table: dict[str, list[str]] = {}
    for op in ops:
        if op["op_name"] not in WEIGHTED_OPS or not scope(op):
            continue
        # named after its output, or (the model's last op, whose output the signature renames) after its weights
        candidates = [scope(op)] + [names.get(int(i), "") for i in op["inputs"][1:] if int(i) >= 0]
        owner = next((o for o in (_owner(module_path(c), order, weighted) for c in candidates if c) if o), None)
        if owner is None:
            continue
        scopes = table.setdefault(owner, [])
        for reached in [op, *_feeding(op, producers)]:
            if scope(reached) and scope(reached) not in scopes:
                scopes.append(scope(reached))
    return table


def _owner(path: str, order: list[str], weighted: list[str]) -> str | None:
    """The weighted module an op named after ``path`` belongs to: it, or the last weighted one defined before it."""
    if path in weighted:
        return path
    if path not in order:
        return None
    before = [name for name in order[: order.index(path)] if name in weighted]
    return before[-1] if before else None


def _feeding(op, producers: dict) -> list:
    """The unweighted ops between ``op``'s data input and the weighted ops (or model inputs) behind it."""
    found, todo = [], [int(op["inputs"][0])]
    while todo:
        producer = producers.get(todo.pop())
        if producer is None or producer["op_name"] in WEIGHTED_OPS or producer in found:
            continue
        found.append(producer)
        todo += [int(i) for i in producer["inputs"] if int(i) in producers]
    return found


def float_scopes_of(interpreter, module, modules: list[str]) -> list[str]:
    """The op scopes that keep ``modules`` (--exclude) in float; a name that is no weighted layer is an error."""
    table = layer_scopes(interpreter, module)
    unknown = [name for name in modules if name not in table]
    if unknown:
        raise BadInputError(
            f"--exclude {', '.join(unknown)}: not a convolution or linear module of this model "
            f"(these are: {', '.join(list(table)[:12])}{', ...' if len(table) > 12 else ''})"
        )
    return list(dict.fromkeys(scope for name in modules for scope in table[name]))
