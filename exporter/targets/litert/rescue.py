"""How `--fallback auto` and `--exclude` keep layers in float in an int8 LiteRT model: ai-edge-quantizer's per-op recipe.

litert-torch names every tensor after the module that made it (``HardswishCNN/...Sequential_features/
...BatchNorm2d_1;``: features.1, the BatchNorm folded into the convolution before it), so each
convolution or fully-connected op is traced back to its weighted module (the module itself, or the
last convolution / linear before the BatchNorm or activation its output is named after). A layer
kept in float is its op and the unweighted ops feeding it since the previous weighted op (padding,
activation), each given the NO_QUANTIZE algorithm by its scope (its output tensor names, ';'-joined,
as ai-edge-quantizer matches recipes). The search measures on the quantized model itself: the float
model is converted once, each attempt only re-quantizes it and runs the held-out samples in the
LiteRT interpreter.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from exporter.errors import BadInputError
from exporter.rescue.flow import RescueTarget, plain_options, rescue
from exporter.rescue.search import Fix, Score

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
WEIGHTED_MODULES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear")


def build(req):
    """The litert rows' flow: the rescue with --fallback auto, else the plain checkpoint flow."""
    from dataclasses import replace

    from exporter.build import from_checkpoint

    if req.options.fallback == "auto":
        if req.loaded is None:
            from exporter.loading.checkpoint import load_checkpoint

            req = replace(req, loaded=load_checkpoint(req.source, progress=req.progress))
        return rescue(req, from_checkpoint, req.loaded.spec)
    return from_checkpoint(req)


def module_path(tensor_name: str) -> str:
    """'Root/pkg.Sequential_features/pkg.BatchNorm2d_1;...' -> 'features.1' (each segment is Class_attribute)."""
    segments = tensor_name.split(";")[0].split("/")[1:]
    parts = [segment.rsplit(".", 1)[-1].split("_", 1)[1] for segment in segments if "_" in segment.rsplit(".", 1)[-1]]
    return ".".join(parts)


def layer_scopes(float_model: Path, module) -> dict[str, list[str]]:
    """{weighted module: the scopes of its op and of the unweighted ops feeding it}, in execution order."""
    from exporter.targets.litert.stage import import_runtime

    interpreter = import_runtime().Interpreter(model_path=str(float_model))
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


def float_scopes_of(float_model: Path, module, modules: list[str]) -> list[str]:
    """The op scopes that keep ``modules`` (--exclude) in float; a name that is no weighted layer is an error."""
    table = layer_scopes(float_model, module)
    unknown = [name for name in modules if name not in table]
    if unknown:
        raise BadInputError(
            f"--exclude {', '.join(unknown)}: not a convolution or linear module of this model "
            f"(these are: {', '.join(list(table)[:12])}{', ...' if len(table) > 12 else ''})"
        )
    return list(dict.fromkeys(scope for name in modules for scope in table[name]))


def target(req) -> RescueTarget:
    """The litert rows' rescue: the float model converted once in a private folder, each attempt re-quantized."""
    from exporter.rescue.flow import HeldOut
    from exporter.targets.litert.runner import LiteRTRunner
    from exporter.targets.litert.stage import METADATA, convert, quantize, write_metadata

    options, held = req.options, HeldOut(req)
    folder = Path(req.output or req.source).parent
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".cnnexport-rescue-litert-", dir=folder))
    float_model = work / "float.tflite"
    convert(held.module, held.spec, float_model, options.layout)
    table = layer_scopes(float_model, held.module)
    numbers = itertools.count()

    def options_for(floated: tuple[str, ...], fix: Fix):
        return plain_options(options, {"exclude": list(dict.fromkeys([*options.exclude, *floated])), **fix.options})

    def measure(floated: tuple[str, ...], fix: Fix) -> Score:
        attempt = work / f"attempt{next(numbers)}.tflite"
        scopes = [scope for name in options_for(floated, fix).exclude for scope in table.get(name, [])]
        quantize(float_model, attempt, "int8", held.calibration(fix)[0], options.layout, scopes)
        write_metadata(
            attempt, {METADATA["spec"]: held.spec.to_json(), METADATA["precision"]: "int8", METADATA["layout"]: options.layout}
        )
        score = held.judge(LiteRTRunner(attempt), fix)
        attempt.unlink()
        return score

    fixes = [Fix("2x calibration samples", samples_factor=2)]
    return RescueTarget(list(table), options_for, fixes, measure, lambda: shutil.rmtree(work, ignore_errors=True))
