"""Make an ExecuTorch program: torch.export (batch dynamic), optional pt2e INT8, lowered to XNNPACK.

INT8 is PyTorch's pt2e flow with ExecuTorch's XNNPACKQuantizer (symmetric int8, per-channel
weights, static activation ranges) calibrated on the calibration split, then re-exported and
lowered, so the quantized convolutions and linears run in XNNPACK's int8 kernels.

The program carries what its runner needs as constant methods (ExecuTorch has no metadata
table): ``cnnexport_spec`` (the input spec JSON), ``cnnexport_precision`` and
``cnnexport_batch`` ([MIN, MAX] the program was memory-planned for).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError, ExportError
from exporter.stages import StageOutput, StageRequest, decomposed_attention
from exporter.targets import first_line
from exporter.targets.executorch import INSTALL_HINT, quiet_torchao_import

CALIBRATION_BATCH = 32


def import_executorch():
    quiet_torchao_import()
    try:
        import executorch.exir
        import executorch.runtime
    except ImportError:
        raise BackendUnavailable(f"ExecuTorch is not installed: {INSTALL_HINT}") from None
    return executorch


def batch_bounds(options) -> tuple[int, int, int]:
    """(MIN, OPT, MAX) of the batch axis; a --static-batch N is (N, N, N)."""
    from exporter.spec import parse_batch_range

    if options.static_batch is not None:
        n = options.static_batch
        return n, n, n
    return parse_batch_range(options.batch)


def check_options(options) -> None:
    """The row's preflight: ExecuTorch importable, a readable batch range, int8 only where XNNPACK runs it."""
    import_executorch()
    batch_bounds(options)
    if options.equalize and options.precision != "int8":
        raise BadInputError("--equalize prepares a model for int8: add --precision int8")
    if options.precision == "int8" and options.backend != "xnnpack":
        raise BadInputError("--precision int8 needs --backend xnnpack (the portable kernels have no int8 convolution)")


def verify_batches(options, batch_sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Verification batch sizes clipped into the planned range, MIN and MAX always among them."""
    low, _, high = batch_bounds(options)
    return tuple(sorted({min(max(b, low), high) for b in batch_sizes} | {low, high}))


def _export(module, example, dynamic):
    import torch

    try:
        with decomposed_attention(), torch.no_grad():
            return torch.export.export(module, (example,), dynamic_shapes=dynamic, strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; the first line names the problem
        raise ExportError(f"torch.export refused the model ({first_line(exc)})") from None


def quantization_config(options):
    """XNNPACKQuantizer's symmetric int8 config with the options' weight granularity and activation observer."""
    from dataclasses import replace

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=options.per_channel)
    if options.observer == "minmax":
        activation = replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = replace(config, input_activation=activation, output_activation=activation)
    return config


def quantizer_for(module, options):
    """The XNNPACKQuantizer for ``options``, with --exclude's modules (by name or type) left unquantized.

    Through its filter function: ``set_module_name(name, None)`` is refused by executorch 1.x
    ("quantization_config == None is not supported yet").
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    quantizer = XNNPACKQuantizer().set_global(quantization_config(options))
    if not options.exclude:
        return quantizer
    names = {name for name, _ in module.named_modules() if name}
    types = {type(m).__name__ for m in module.modules()}
    unknown = [item for item in options.exclude if item not in names and item not in types]
    if unknown:
        raise BadInputError(f"--exclude {', '.join(unknown)}: neither a module name nor a module type of this model")
    paths = tuple(item for item in options.exclude if item in names)
    kinds = {item for item in options.exclude if item in types}

    def quantize_node(node) -> bool:
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            if path in paths or path.startswith(tuple(p + "." for p in paths)) or str(kind).rsplit(".", 1)[-1] in kinds:
                return False
        return True

    return quantizer.set_filter_function(quantize_node)


def prepare_and_calibrate(captured, quantizer, calibration):
    """pt2e: annotate, observe the calibration batches, convert to Q/DQ; (model, samples seen)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(captured, quantizer)
    samples = 0
    with torch.no_grad():
        for batch in calibration.batches(CALIBRATION_BATCH):
            prepared(torch.from_numpy(batch))
            samples += len(batch)
    return convert_pt2e(prepared), samples


def describe_quantizer(options) -> str:
    granularity = "per-channel" if options.per_channel else "per-tensor"
    return f"XNNPACKQuantizer (symmetric, {granularity}, {options.observer} activation ranges)"


def _quantize(module, example, dynamic, calibration, options):
    """pt2e with XNNPACKQuantizer, calibrated on ``calibration``; (the Q/DQ model, what the details record)."""
    if calibration is None:
        raise BadInputError("an int8 ExecuTorch program needs calibration data: --calib IMAGE_FOLDER | FILE.npy | digits")
    details: dict = {}
    if options.equalize:
        from exporter.rescue.torch_equalize import equalized_module

        module, details["equalization"] = equalized_module(module, example, calibration)
    quantizer = quantizer_for(module, options)
    converted, samples = prepare_and_calibrate(_export(module, example, dynamic).module(), quantizer, calibration)
    details.update(calibration_samples=samples, quantizer=describe_quantizer(options))
    if options.exclude:
        details["kept_in_float"] = list(options.exclude)
    return converted, details


def _restore_batch_range(edge, exported) -> None:
    """Memory-plan for the --batch range the user asked for.

    Measured with executorch 1.5.1 and torch 2.14: after lowering, the shape environment bounds
    the batch symbol at [2, 15] whatever ``Dim(max=...)`` said, so the program was planned for
    15 samples and refused batch 32 at run time. The exported program's range constraints still
    hold the requested range; putting it back before ``to_executorch`` plans for MAX.
    """
    from torch.utils._sympy.value_ranges import ValueRanges

    wanted = {str(symbol): bound for symbol, bound in exported.range_constraints.items()}
    for node in edge.exported_program().graph.nodes:
        value = node.meta.get("val")
        sizes = getattr(value, "shape", ())
        symbolic = next((s for s in sizes if hasattr(s, "node") and hasattr(s.node, "shape_env")), None)
        if symbolic is None:
            continue
        env = symbolic.node.shape_env
        for symbol in list(env.var_to_range):
            if str(symbol) in wanted:
                _refuse_a_fixed_batch(env.var_to_range[symbol], wanted[str(symbol)])
                env.var_to_range[symbol] = ValueRanges(wanted[str(symbol)].lower, wanted[str(symbol)].upper)
        return


def _refuse_a_fixed_batch(lowered, wanted) -> None:
    """Refuse a program whose lowering fixed the batch at the export example.

    Measured on shufflenet_v2_x0_5 (executorch 1.5.1): the channel shuffle's views leave the
    batch symbol at [8, 8] after lowering, XNNPACK's tensors are static at batch 8, and the
    program fails at every other size ("Attempted to resize a static tensor"). Said here, with
    what to do, rather than as a runtime error at verification.
    """
    if lowered.lower == lowered.upper and wanted.lower != wanted.upper:
        raise ExportError(
            f"ExecuTorch's lowering fixed the batch at {lowered.lower} (the export example), so the program would "
            f"not run at the other sizes of --batch {wanted.lower}..{wanted.upper}: export it with --static-batch N"
        )


def delegation(edge) -> dict:
    """Which operators XNNPACK took and which run in ExecuTorch's portable kernels (counts per operator)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    skip = {"getitem", "sym_size"}  # plumbing, not computation
    delegated = Counter({k: v.delegated for k, v in info.delegation_by_operator.items() if v.delegated and k not in skip})
    portable = Counter({k: v.non_delegated for k, v in info.delegation_by_operator.items() if v.non_delegated and k not in skip})
    return {
        "delegated_subgraphs": int(info.num_delegated_subgraphs),
        "delegated_ops": dict(sorted(delegated.items())),
        "portable_ops": dict(sorted(portable.items())),
    }


def export_inputs(spec, options):
    """(the example batch, torch.export's dynamic_shapes) for the options' batch range."""
    import torch

    low, example_size, high = batch_bounds(options)
    example = _example(spec, max(example_size, 2) if low < high else example_size)
    return example, ({0: torch.export.Dim("batch", min=low, max=high)},) if low < high else None


def capture(module, example, dynamic):
    """The model captured for pt2e (torch.export, then its GraphModule)."""
    return _export(module, example, dynamic).module()


def export(loaded, staging: Path, name: str, options, calibration=None) -> StageOutput:
    """Write the program ``name`` into ``staging``; the details say what was delegated and the planned batch range."""

    import_executorch()
    from executorch.exir import to_edge_transform_and_lower

    if not name.endswith(".pte"):
        raise BadInputError(f"-o {name}: an ExecuTorch program is NAME.pte")
    low, _, high = batch_bounds(options)
    example, dynamic = export_inputs(loaded.spec, options)
    module = loaded.module.eval()
    details: dict = {"precision": options.precision, "backend": options.backend, "batch": [low, high]}
    if options.precision == "int8":
        module, quantized = _quantize(module, example, dynamic, calibration, options)
        details.update(quantized)
    exported = _export(module, example, dynamic)
    partitioners = []
    if options.backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioners.append(XnnpackPartitioner())
    constants = {
        "cnnexport_spec": loaded.spec.to_json(),
        "cnnexport_precision": options.precision,
        "cnnexport_batch": [low, high],
    }
    try:
        with _quiet():
            edge = to_edge_transform_and_lower(exported, partitioner=partitioners, constant_methods=constants)
            if dynamic is not None:
                _restore_batch_range(edge, exported)
            program = edge.to_executorch()
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - ExecuTorch's lowering raises its own errors
        raise ExportError(f"ExecuTorch could not lower the model ({first_line(exc)})") from None
    details.update(delegation(edge))
    target = Path(staging) / name
    target.write_bytes(program.buffer)
    return StageOutput(files=[target.name], details=details)


def _example(spec, batch_size: int):
    from exporter.stages import example_batch

    return example_batch(spec, batch_size)


@contextlib.contextmanager
def _quiet():
    """ExecuTorch and torch.export print deprecation notes on stdout; stdout belongs to --json."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def make(req: StageRequest) -> StageOutput:
    """The executorch row's stage."""
    return export(req.loaded, req.staging, req.name, req.options, req.calibration if req.options.precision == "int8" else None)
