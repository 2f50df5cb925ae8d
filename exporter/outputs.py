"""What a model returns, as named outputs with a task each.

A forward may return a tensor, a tuple/list, a dict/OrderedDict, a namedtuple, or any nesting of
them. Every tensor in it becomes one named output, named by its path (``out``, ``aux``, ``0``,
``1.cls``); a lone tensor is ``logits``. Every artifact kind carries these names, and
verification compares each output by name with the metrics its task needs (exporter/tasks/: one
module per task). The task is the one the output's shape suggests (a detect output is said so by
its checkpoint's source), overridable per output (``--task``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter import tasks as task_modules
from exporter.errors import BadInputError

SINGLE_OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    task: str
    classes: int | None = None  # the class axis (axis 1) length of a classify/segment output
    shape: tuple[int, ...] = ()  # one sample's shape at the spec's input size (without the batch)

    def to_dict(self) -> dict:
        return {"name": self.name, "task": self.task, "classes": self.classes, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> OutputSpec:
        task = str(d["task"])
        if task not in task_modules.names():
            raise BadInputError(f"the stored output {d.get('name')!r} has unknown task {task!r}")
        classes = d.get("classes")
        return cls(
            name=str(d["name"]),
            task=task,
            classes=int(classes) if classes is not None else None,
            shape=tuple(int(v) for v in d.get("shape") or ()),
        )


class DetectionPostprocessing(BadInputError):
    """The model returns per-image detections (a list of dicts with data-dependent box counts)."""


DETECTION_HINT = (
    "the model returns per-image detections after post-processing (a list of dicts of boxes, labels, scores, "
    "whose sizes depend on the image), which no artifact can express with a batch axis; export the head's "
    "tensors instead (wrap the model so forward returns the backbone + head outputs, e.g. (boxes, scores) "
    "before NMS; README: Segmentation and detection) and keep NMS in the application"
)


def flatten(value: Any, batch: int | None = None) -> list[tuple[str, tuple, Any]]:
    """[(name, path, tensor)] of every tensor in ``value``, in forward's order.

    ``path`` is the sequence of keys/indices that picks the tensor out of ``value``. A list of
    dicts holding ``boxes`` (torchvision's detection post-processing) is refused in one sentence;
    with ``batch`` given, a tensor whose first dimension is not the batch is refused too (an
    output that does not grow with the batch cannot be exported with a dynamic batch axis).
    """
    import torch

    if isinstance(value, torch.Tensor):
        found = [(SINGLE_OUTPUT_NAME, (), value)]
    else:
        if _is_detection_list(value):
            raise DetectionPostprocessing(DETECTION_HINT)
        found = []
        _walk(value, (), found)
        if not found:
            raise BadInputError(f"the model returns {type(value).__name__} with no tensor in it; cnnexport needs tensor outputs")
    names = [name for name, _, _ in found]
    if len(set(names)) != len(names):
        raise BadInputError(f"the model's outputs have clashing names ({', '.join(names)}); give its dict keys distinct names")
    if batch is not None:
        for name, _, tensor in found:
            if tensor.ndim == 0 or tensor.shape[0] != batch:
                raise BadInputError(
                    f"output {name!r} has shape {tuple(tensor.shape)} for a batch of {batch}: its first dimension is not "
                    "the batch, so it cannot be exported with a dynamic batch axis; drop it with --outputs"
                )
    return found


def _walk(value, path: tuple, found: list) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        found.append((".".join(map(str, path)), path, value))
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, (*path, key), found)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple: by field name
        for key, item in zip(value._fields, value):
            _walk(item, (*path, key), found)
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            _walk(item, (*path, index), found)
    # None, numbers, strings: not outputs


def _is_detection_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "boxes" in v for v in value)


def pick(value, path: tuple):
    """The tensor at ``path`` in a forward's return value (see ``flatten``)."""
    for key in path:
        if isinstance(value, tuple) and hasattr(value, "_fields") and isinstance(key, str):
            value = getattr(value, key)
        else:
            value = value[key]
    return value


def infer_task(shape: tuple[int, ...]) -> str:
    """The task an output's shape (with the batch) suggests (exporter/tasks/)."""
    return task_modules.infer(shape)


def describe(found: list[tuple[str, tuple, Any]], tasks: dict[str, str] | None = None) -> tuple[OutputSpec, ...]:
    """OutputSpecs of flattened outputs; ``tasks`` maps a name (or "*" for all) to a task that overrides the shape's."""
    tasks = dict(tasks or {})
    unknown = [n for n in tasks if n != "*" and n not in {name for name, _, _ in found}]
    if unknown:
        raise BadInputError(
            f"--task names output(s) {', '.join(unknown)} the model does not return "
            f"(its outputs: {', '.join(name for name, _, _ in found)})"
        )
    specs = []
    for name, _, tensor in found:
        shape = tuple(int(d) for d in tensor.shape)
        task = tasks.get(name, tasks.get("*")) or infer_task(shape)
        module = task_modules.get(task)
        problem = module.check_shape(name, shape)
        if problem:
            raise BadInputError(problem)
        specs.append(OutputSpec(name=name, task=task, classes=module.classes_of(shape), shape=shape[1:]))
    return tuple(specs)


def parse_outputs(text: str | None) -> tuple[str, ...] | None:
    """--outputs 'out,aux' -> ('out', 'aux'); None or empty = every output."""
    if not text:
        return None
    names = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    return names or None


def parse_tasks(text: str | None) -> dict[str, str]:
    """--task 'segment' (every output) or 'out=segment,boxes=regress' -> {name or '*': task}."""
    if not text:
        return {}
    tasks = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, _, task = part.rpartition("=")
        name = name.strip() or "*"
        task = task.strip()
        known = task_modules.names()
        if task not in known:
            raise BadInputError(f"--task {text!r}: {task!r} is not one of {', '.join(known)} (write TASK or NAME=TASK,...)")
        tasks[name] = task
    return tasks


def select(found: list[tuple[str, tuple, Any]], wanted: tuple[str, ...] | None) -> tuple[list, list[str]]:
    """(the outputs kept, in forward's order, the names dropped) for ``--outputs``."""
    if not wanted:
        return found, []
    names = [name for name, _, _ in found]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise BadInputError(
            f"--outputs names {', '.join(unknown)}, which the model does not return (its outputs: {', '.join(names)})"
        )
    kept = [f for f in found if f[0] in wanted]
    return kept, [n for n in names if n not in wanted]


def unwrap(module):
    """The user's model inside a FlatOutputs wrapper (the module itself otherwise)."""
    return module.model if getattr(module, "output_names", None) is not None and hasattr(module, "paths") else module


def named(value, names: list[str] | None) -> dict:
    """A forward's return value as {name: tensor}: flattened, then renamed to ``names`` when they fit."""
    found = flatten(value)
    if names and len(names) == len(found):
        return {name: tensor for name, (_, _, tensor) in zip(names, found)}
    return {name: tensor for name, _, tensor in found}
