"""Parsing shared by the verbs: model-loading flags, input-spec flags, verification flags."""

from __future__ import annotations

import json
from pathlib import Path


def spec_overrides(a: dict) -> dict:
    """--input-shape/--mean/--std/--labels as ModelSpec overrides (None = not given)."""
    from exporter.spec import parse_floats, parse_input_shape, read_labels

    return {
        "input_shape": parse_input_shape(a["input_shape"]) if a.get("input_shape") else None,
        "mean": parse_floats(a["mean"], "--mean") if a.get("mean") else None,
        "std": parse_floats(a["std"], "--std") if a.get("std") else None,
        "labels": read_labels(a["labels"]) if a.get("labels") else None,
    }


def arch_kwargs(text: str | None) -> dict:
    from exporter.errors import BadInputError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"--arch-kwargs is not valid JSON ({exc.msg}); example: '{{\"num_classes\": 7}}'") from None
    if not isinstance(value, dict):
        raise BadInputError("--arch-kwargs must be a JSON object, e.g. '{\"num_classes\": 7}'")
    return value


def load(progress, checkpoint: Path, a: dict, artifact: Path | None = None):
    """The checkpoint as the verb's flags describe it (see exporter.build.load_reference)."""
    from exporter.build import load_reference
    from exporter.outputs import parse_outputs, parse_tasks

    return load_reference(
        checkpoint,
        artifact,
        arch=a.get("arch"),
        arch_kwargs=arch_kwargs(a.get("arch_kwargs")),
        trust_pickle=a.get("trust_pickle", False),
        overrides=spec_overrides(a),
        weights=a.get("weights", "model"),
        progress=progress,
        outputs=parse_outputs(a.get("outputs")),
        tasks=parse_tasks(a.get("task")),
    )


def reads(a: dict) -> tuple:
    """The user files a verb reads besides its source, as (role, path), for exporter.guard."""
    arch_file = (a.get("arch") or "").rpartition(":")[0]
    return (
        ("the --checkpoint reference", a.get("checkpoint")),
        ("the --labels file", a.get("labels")),
        *((("the --arch file", arch_file),) if arch_file.endswith(".py") else ()),
    )


def verify_options(a: dict, precision: str = "fp32", batch_sizes: str | None = None):
    from exporter.options import DetectOptions, ToleranceOverrides, validate_model
    from exporter.pipeline import VerifyOptions
    from exporter.spec import parse_batch_sizes

    validate_model(ToleranceOverrides, {k: a[k] for k in ToleranceOverrides.model_fields})  # exit 2 naming the flag
    detect = validate_model(DetectOptions, {k: a[k] for k in DetectOptions.model_fields})
    return VerifyOptions(
        enabled=not a.get("no_verify", False),
        batch_sizes=parse_batch_sizes(batch_sizes or a.get("batch_sizes") or "1,4"),
        seed=a["seed"],
        images=a["images"],
        precision=precision,
        max_rel_err=a["max_rel_err"],
        min_cosine=a["min_cosine"],
        min_top1=a["min_top1"],
        conf=detect.conf,
        iou=detect.iou,
    )
