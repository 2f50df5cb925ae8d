"""ONNX helpers the INT8 and FP16 stages share: reading a model, carrying its metadata over,
silencing onnxruntime's tools, and the memory budget for runs that read every intermediate tensor.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from exporter.errors import BadInputError, root_cause

# Calibration and the fp16 overflow probe read every intermediate tensor of a batch at once; this
# bounds how many bytes of them one run may produce (ViT-H/14: an estimated 1.5 GB per 224x224 sample).
INTERMEDIATE_BUDGET = 2 << 30
_ELEMENT_BYTES = {1: 4, 10: 2, 11: 8, 16: 2}  # float, float16, double, bfloat16


def load_onnx(path: Path, external_data: bool = True):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors vary
        raise BadInputError(f"{path} is not a readable ONNX model ({root_cause(exc)})") from None


def copy_metadata(source, target, extra: dict) -> None:
    from exporter.targets.onnx.stage import set_metadata_props

    values = {p.key: p.value for p in source.metadata_props}
    values.update({k: str(v) for k, v in extra.items()})
    set_metadata_props(target, values)


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization logs and prints progress; keep our stdout clean for --json."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def intermediate_bytes_per_sample(model) -> int:
    """Bytes of all float intermediate tensors for one sample, from the shapes in value_info.

    The first dimension counts as the batch (1); other unknown dimensions count as 1, so this
    is a lower bound for graphs whose shapes ONNX cannot infer.
    """
    total = 0
    for info in list(model.graph.value_info) + list(model.graph.output):
        tensor = info.type.tensor_type
        size = _ELEMENT_BYTES.get(tensor.elem_type)
        if size is None or not tensor.HasField("shape"):
            continue
        for dim in list(tensor.shape.dim)[1:]:
            size *= dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else 1
        total += size
    return total


def samples_within_budget(per_sample: int, most: int, budget: int | None = None) -> int:
    """How many samples one run may take so its intermediates stay within the budget (>= 1)."""
    budget = INTERMEDIATE_BUDGET if budget is None else budget
    return max(1, min(most, budget // max(per_sample, 1)))


def float_head_nodes(model, spec_model=None) -> list[str]:
    """The nodes of ONNX ``model`` that decode the detect outputs its stored spec (or ``spec_model``'s) names:
    what every INT8 stage keeps in float (float_tail); none for a model without detect outputs."""
    from exporter import tasks
    from exporter.spec import METADATA_KEY, ModelSpec, stored_spec
    from exporter.tasks.detect import float_tail

    source = spec_model if spec_model is not None else model
    text = next((p.value for p in source.metadata_props if p.key == METADATA_KEY), "")
    stored = stored_spec(text, "the ONNX model")
    outputs = [o.name for o in ModelSpec.from_dict(stored).outputs if tasks.get(o.task).FLOAT_HEAD] if stored else []
    return float_tail(model.graph, outputs) if outputs else []
