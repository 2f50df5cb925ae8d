"""How `--fallback auto` keeps layers in float in an INT8 ONNX model (CPU and TensorRT flavours).

A layer kept in float is its ONNX node left out of quantization (``--exclude`` by node name) with
the unweighted nodes that feed it since the previous weighted layer (its input's activation,
pooling, residual Add): onnxruntime quantizes a tensor for every quantized node that reads it, so
only then does the layer read a float input (measured: on a Conv-BN-Hardswish net, the convs
alone in float changed nothing while their Hardswish outputs stayed int8). Layers are named by
the PyTorch module that owns the weight (exporter/rescue/debug.py reads it off the initializer
name). Each attempt is the row's own flow (quantize, verify on the held-out split, with --eval
the top-1 drop), built in a private folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from exporter.rescue.flow import RescueTarget, plain_options
from exporter.rescue.search import Fix
from exporter.targets.onnx.preprocess import preprocessed
from exporter.targets.onnx.quantize import METHODS


def nodes_by_module(graph) -> dict[str, list[str]]:
    """{module: its ONNX nodes and the unweighted ones feeding them since the previous weighted layer}, in order."""
    from exporter.rescue.debug import onnx_layers

    _, layers, producers = onnx_layers(graph)
    weighted = {node.name for node, _, _ in layers}
    by_module: dict[str, list[str]] = {}
    for node, module, _ in layers:
        nodes = by_module.setdefault(module, [])
        nodes += [name for name in [node.name, *_feeding(node, producers, weighted)] if name not in nodes]
    return by_module


def _feeding(node, producers: dict, weighted: set[str]) -> list[str]:
    """The unweighted nodes between ``node``'s data input and the weighted layers (or graph inputs) behind it."""
    found, todo = [], [node.input[0]]
    while todo:
        producer = producers.get(todo.pop())
        if producer is None or producer.name in weighted or producer.name in found:
            continue
        found.append(producer.name)
        todo += [tensor for tensor in producer.input if tensor in producers]
    return found


def fixes(options) -> list[Fix]:
    """The cheap fixes, cheapest first: weight granularity, equalization, the other calibration methods, more samples."""
    granularity = "per-tensor weights" if options.per_channel else "per-channel weights"
    found = [Fix(granularity, {"per_channel": not options.per_channel})]
    if not options.equalize:
        found.append(Fix("cross-layer equalization", {"equalize": True}))
    found += [Fix(f"{method} calibration", {"method": method}) for method in METHODS if method != options.method]
    return [*found, Fix("2x calibration samples", samples_factor=2)]


def target(req) -> RescueTarget:
    """The int8 rows' rescue: weighted layers by module, each kept in float by excluding its nodes (as named in the
    pre-processed graph the stage quantizes)."""
    # in the system temp folder: the source may sit in a read-only place, and only its graph is read here
    with tempfile.TemporaryDirectory(prefix="cnnexport-rescue-graph-") as folder:
        flavour = "tensorrt" if req.kind.name == "int8_tensorrt" else "cpu"
        by_module = nodes_by_module(preprocessed(req.source, Path(folder), flavour))
    options = req.options

    def options_for(floated: tuple[str, ...], fix: Fix):
        nodes = [node for module in floated for node in by_module[module]]
        return plain_options(options, {"exclude": [*options.exclude, *nodes], **fix.options})

    return RescueTarget(list(by_module), options_for, fixes(options))
