"""How `--fallback auto` keeps layers in float in an ExecuTorch program, and a quick measure for the search.

A layer kept in float is a module the XNNPACKQuantizer leaves unannotated (``--exclude`` by module
name): its convolution runs in float, in XNNPACK's fp32 kernels or the portable ones. The search
ranks a layer with the layers reading its output (read off the captured graph), so that output
stays float. The search
measures each attempt on the pt2e model in PyTorch (the Q/DQ graph XNNPACK lowers, run by
PyTorch's reference kernels): capturing once and lowering never makes an attempt a few seconds.
The final program is lowered and verified by ExecuTorch's runtime as any other (the flow).
"""

from __future__ import annotations

import copy

from exporter.rescue.flow import RescueTarget, plain_options
from exporter.rescue.search import PLAIN, Fix, Score


def feeding_modules(captured, leaves: set[str]) -> dict[str, list[str]]:
    """{module: the leaf modules feeding it since the previous weighted layer} for the captured graph's
    convolutions and linears, in order.

    They are left unquantized with it: XNNPACKQuantizer annotates conv-BatchNorm-activation as one
    pattern, so the tensor a layer reads stays int8 unless the BatchNorm and activation before it are float.
    """
    weighted = {node: _module_of(node) for node in captured.graph.nodes if _is_weighted(node)}
    feeding: dict[str, list[str]] = {}
    for node, module in weighted.items():
        if module is None:
            continue
        attached = feeding.setdefault(module, [])
        todo, seen = list(node.all_input_nodes), set()
        while todo:
            other = todo.pop()
            if other in seen or other in weighted:
                continue
            seen.add(other)
            path = _module_of(other)
            if path in leaves and path not in attached:
                attached.append(path)
            todo += list(other.all_input_nodes)
    return feeding


def _is_weighted(node) -> bool:
    name = str(node.target)
    return node.op == "call_function" and any(op in name for op in ("aten.conv", "aten.linear", "aten.convolution"))


def _module_of(node) -> str | None:
    """The module a call came from (torch.export's nn_module_stack, innermost); None for a functional call."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return path or None


def fixes(options) -> list[Fix]:
    """The cheap fixes, cheapest first: the other weight granularity, equalization, the other observer, twice the samples."""
    return [
        Fix("per-tensor weights" if options.per_channel else "per-channel weights", {"per_channel": not options.per_channel}),
        Fix(
            "minmax activation ranges" if options.observer == "histogram" else "histogram activation ranges",
            {"observer": "minmax" if options.observer == "histogram" else "histogram"},
        ),
        *([] if options.equalize else [Fix("cross-layer equalization", {"equalize": True})]),
        Fix("2x calibration samples", samples_factor=2),
    ]


def target(req) -> RescueTarget:
    """The executorch row's rescue: modules left unquantized by name, measured on the pt2e model in PyTorch."""
    options = req.options

    feeding: dict[str, list[str]] = {}

    def options_for(floated: tuple[str, ...], fix: Fix):
        attached = [module for layer in floated for module in feeding.get(layer, []) if module not in floated]
        kept = list(dict.fromkeys([*options.exclude, *floated, *attached]))
        return plain_options(options, {"exclude": kept, **fix.options})

    measure, found, equalizable = _measure(req, options_for)
    feeding.update(found)
    cheap = [fix for fix in fixes(options) if equalizable or "equalize" not in fix.options]
    return RescueTarget(list(found), options_for, cheap, measure)


def _measure(req, options_for):
    """Score an attempt on the pt2e model: quantize the captured graph, run the held-out samples, judge by the int8 rule."""
    from torchao.quantization.pt2e import move_exported_model_to_eval

    from exporter.rescue.flow import HeldOut
    from exporter.runners.torch import TorchRunner
    from exporter.targets.executorch.stage import capture, export_inputs, prepare_and_calibrate, quantizer_for

    held = HeldOut(req)
    module, inputs = held.module, export_inputs(held.spec, req.options)
    captures = {False: capture(module, *inputs)}
    leaves = {name for name, sub in module.named_modules() if name and not any(True for _ in sub.children())}

    def captured(equalize: bool):
        """The captured model, equalized first where the attempt asks (captured once per setting)."""
        if equalize not in captures:
            from exporter.rescue.torch_equalize import equalized_module

            captures[equalize] = capture(equalized_module(module, inputs[0], held.calibration(PLAIN)[0])[0], *inputs)
        return captures[equalize]

    def measure(floated: tuple[str, ...], fix: Fix) -> Score:
        calib, _ = held.calibration(fix)
        options = options_for(floated, fix)
        graph = copy.deepcopy(captured(options.equalize))
        quantized, _ = prepare_and_calibrate(graph, quantizer_for(module, options), calib)
        move_exported_model_to_eval(quantized)
        # a plain callable: TorchRunner calls eval() on a module, which an exported model refuses
        return held.judge(TorchRunner(lambda x: quantized(x), getattr(module, "output_names", None)), fix)

    from exporter.rescue.torch_equalize import equalizable_pairs

    return measure, feeding_modules(captures[False], leaves), equalizable_pairs(module, inputs[0]) > 0
