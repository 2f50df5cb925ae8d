"""ONNX via torch.onnx.export with a dynamic batch axis named ``batch``.

Exporter: ``dynamo`` (torch.export based, torch's default since 2.9) or ``legacy``
(TorchScript based). The file is self-contained unless the weights exceed 2 GB, in which
case the weights go to ``<name>.data`` beside it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from exporter.errors import ExportError, root_cause
from exporter.spec import METADATA_KEY
from exporter.stages import StageOutput, decomposed_attention, example_batch

TWO_GB = 2 * 1024**3
EXPORTERS = ("dynamo", "legacy")


def save_model(model, path: Path) -> list[str]:
    """Save inline when the weights fit protobuf's 2 GB limit, else into <name>.data beside it.

    Returns the file names written. A model loaded without its external data keeps pointing at
    the files it came from (its tensors hold references, not bytes) and is saved inline.
    """
    import onnx

    path = Path(path)
    if sum(len(t.raw_data) for t in model.graph.initializer) < TWO_GB * 0.95:
        onnx.save_model(model, str(path))
        return [path.name]
    data_name = path.name + ".data"
    (path.parent / data_name).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
    return [path.name, data_name]


def rename_values(model, names: dict[str, str]) -> None:
    """Rename graph values (outputs included) everywhere they are produced, read or described."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for info in [*graph.output, *graph.value_info, *graph.input]:
        info.name = names.get(info.name, info.name)


def has_external_data(model) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def set_metadata_props(model, values: dict[str, str]) -> None:
    """Replace the given metadata_props keys, keeping the others."""
    keep = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in values.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)


def add_metadata(model, spec, extra: dict | None = None) -> None:
    """Store the input spec and the tool version in metadata_props (replacing old values)."""
    from exporter import __version__

    set_metadata_props(model, {METADATA_KEY: spec.to_json(), "cnnexport.version": __version__, **(extra or {})})


def boolean_equals_as_xnor(model) -> int:
    """Rewrite Equal over two BOOL inputs as Not(Xor): the same truth table, and a graph TensorRT parses
    (its Equal takes numbers only). torch's integer floor division exports with such an Equal (the sign
    correction), e.g. in the top-k of YOLO26's NMS-free head. Returns the number of nodes rewritten."""
    from onnx import TensorProto, helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:  # a Constant node's value is typed by its tensor
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == node.attribute[0].TENSOR:
            types[node.output[0]] = node.attribute[0].t.data_type
    rewritten = 0
    nodes = []
    for node in model.graph.node:
        if (
            node.op_type == "Equal"
            and node.domain in ("", "ai.onnx")
            and all(types.get(i) == TensorProto.BOOL for i in node.input)
        ):
            differs = f"{node.output[0]}__xor"
            nodes.append(helper.make_node("Xor", list(node.input), [differs], name=f"{node.name}__xor"))
            nodes.append(helper.make_node("Not", [differs], list(node.output), name=node.name))
            rewritten += 1
        else:
            nodes.append(node)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return rewritten


def export(
    loaded,
    staging_dir: Path,
    name: str,
    opset: int | None = None,
    exporter: str = "dynamo",
    input_name: str = "input",
    output_name: str = "logits",
) -> StageOutput:
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    module, spec = loaded.module, loaded.spec
    notes = []
    from exporter.outputs import unwrap

    if exporter == "dynamo" and isinstance(unwrap(module), torch.jit.ScriptModule):
        exporter = "legacy"
        notes.append("TorchScript input cannot go through torch.export; used the legacy exporter")
    target = Path(staging_dir) / name
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = weight_bytes >= TWO_GB * 0.95
    x = example_batch(spec)
    # a lone tensor output takes the chosen name; other outputs keep their paths' names (out, aux, 0, 1.cls)
    from exporter.outputs import SINGLE_OUTPUT_NAME

    output_names = [output_name] if spec.output_names == [SINGLE_OUTPUT_NAME] else spec.output_names
    placeholders = _torch_onnx_export(module, x, target, exporter, input_name, output_names, opset, external)
    model = onnx.load(str(target), load_external_data=False)
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:  # never a file of another opset than the one asked for
        raise ExportError(f"torch.onnx.export ({exporter}) wrote opset {written}, not the --opset {opset} asked for")
    if placeholders is not None:
        rename_values(model, dict(zip(placeholders, output_names)))
    add_metadata(model, spec, {"cnnexport.exporter": exporter})
    boolean_equals = boolean_equals_as_xnor(model)
    if external:
        onnx.load_external_data_for_model(model, str(staging_dir))
        for leftover in Path(staging_dir).iterdir():
            if leftover.name != name:
                leftover.unlink()
    files = save_model(model, target)
    try:
        onnx.checker.check_model(str(target), full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported ONNX model does not pass onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    return StageOutput(
        files=files,
        details={
            "exporter": exporter,
            "opset": written,
            "nodes": len(model.graph.node),
            "input": input_name,
            "output": output_names[0],
            "outputs": output_names,
            "external_data": external,
            **({"boolean_equals_as_xnor": boolean_equals} if boolean_equals else {}),
            **({"notes": notes} if notes else {}),
        },
    )


def _torch_onnx_export(
    module, x, target: Path, exporter: str, input_name: str, output_names: list[str], opset: int | None, external: bool
) -> list[str] | None:
    """torch.onnx.export with a dynamic batch; the legacy exporter's placeholder output names (to rename), else None."""
    import torch

    # the TorchScript-based exporter refuses value names it uses itself ('0', '1'): placeholders, renamed after
    placeholders = [f"cnnexport_output_{i}" for i in range(len(output_names))]
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                torch.onnx.export(
                    module,
                    (x,),
                    str(target),
                    dynamo=True,
                    input_names=[input_name],
                    output_names=output_names,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=opset,
                    external_data=external,
                    verbose=False,
                )
            else:
                with decomposed_attention():  # the fused attention op has no legacy ONNX symbolic
                    torch.onnx.export(
                        module,
                        (x,),
                        str(target),
                        dynamo=False,
                        input_names=[input_name],
                        output_names=placeholders,
                        dynamic_axes={input_name: {0: "batch"}, **{n: {0: "batch"} for n in placeholders}},
                        opset_version=opset or 17,
                    )
    except Exception as exc:  # torch.onnx raises many error types
        other = "legacy" if exporter == "dynamo" else "dynamo"
        raise ExportError(f"torch.onnx.export ({exporter}) failed: {root_cause(exc)}; try --exporter {other}") from exc
    return placeholders if exporter == "legacy" else None


def make(req) -> StageOutput:
    """The onnx row's stage (exporter.stages.StageRequest)."""
    options = req.options.model_dump()
    consumers = options.pop("consumer_files", False)
    made = export(req.loaded, req.staging, req.name, **options)
    if consumers:
        from exporter.release.consumers import note, write_consumer_files

        written = write_consumer_files(req.loaded.spec, req.staging, req.name)
        made.files.extend(written)
        made.details["consumer_files"] = [*written, *filter(None, [note(req.loaded.spec)])]
    return made
