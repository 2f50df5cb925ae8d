"""Tasks: what an output of a model is for, and how an artifact's copy of it is judged.

One module per task, each readable alone:

    classify  (N, C) class scores            top-1 agreement, centred cosine; eval: top-1 / top-k
    segment   (N, C, H, W) class maps        pixel agreement and mIoU, centred cosine; eval: mIoU
    dense     (N, 1, H, W) regression maps   error per channel against its own range (depth, heat maps)
    regress   anything else                  error per channel (embeddings, boxes, feature vectors)
    features  a backbone's feature maps        error per channel, cosine; said so by its source (timm features_only)
    detect    (N, 4 + C, anchors) / (N, K, 6) boxes decoded, matched, F1 and IoU; eval: mAP

A task module holds ``recognises(shape)`` (whether the shape alone suggests it; tried in NAMES
order), ``check_shape(name, shape)`` (a sentence when an output cannot be this task),
``classes_of(shape)``, ``compare(ref, out, tol, noise, noise_cosine, image_size)`` (the metrics of
one output, with status and reason), ``agreement_text(metrics)`` (its column in the tables, or
None), ``describe_rule(tol)`` (its pass rule in words) and, where it has labelled data, ``EVAL``:
the module whose ``evaluate_output`` and ``render`` are its `cnnexport eval` (``DEMO``: its demo).
verify, reports, eval and the demo ask the task of each output; no module outside this package
names a task (tests/test_structure.py).
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("classify", "segment", "dense", "regress", "detect", "features")
SHOWN_FIRST = ("classify", "detect", "segment")  # whose agreement a table shows first when several outputs are judged
EVALUATED_FIRST = ("detect", "segment", "classify")  # which output `cnnexport eval` judges a model by
DEFAULT = "classify"  # the task whose eval judges a model without an output of the others


PLUGIN_GROUP = "cnnexport.tasks"
_plugins: dict[str, ModuleType] | None = None


def plugins() -> dict[str, ModuleType]:
    """{name: module} of the installed task plug-ins (read once); a broken one is named on stderr and left out."""
    global _plugins
    if _plugins is None:
        from importlib.metadata import entry_points

        _plugins = {}
        for point in entry_points(group=PLUGIN_GROUP):
            try:
                module = point.load()
                name = module.NAME
                if name in NAMES or not callable(getattr(module, "compare", None)):
                    raise TypeError(f"{point.value} is not a task module with a new NAME and a compare function")
            except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take verification down with it
                import sys

                print(
                    f"cnnexport: ignoring the task plug-in {point.name} ({point.value}): {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
                continue
            _plugins[name] = module
    return _plugins


def names() -> tuple[str, ...]:
    """Every task: the built-in ones, then the plug-ins'."""
    return NAMES + tuple(plugins())


def get(name: str) -> ModuleType:
    """The module of task ``name`` (one of names())."""
    if name in NAMES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in plugins():
        return plugins()[name]
    raise ValueError(f"unknown task {name!r}; tasks: {', '.join(names())}")


def infer(shape: tuple[int, ...]) -> str:
    """The task an output's shape (with the batch) suggests: the first that recognises it, plug-ins before regress."""
    order = [n for n in NAMES if n != "regress"] + list(plugins()) + ["regress"]
    return next(name for name in order if get(name).recognises(shape))


def agreement_text(metrics: dict) -> str:
    """The agreement column of a verdict's (or output's) metrics: the first task that measured one, else '-'."""
    for name in (*SHOWN_FIRST, *plugins()):
        text = get(name).agreement_text(metrics)
        if text is not None:
            return text
    return "-"


def describe_rule(tolerance, judged) -> str:
    """The pass rule of the tasks ``judged`` in words, each rule once, in names() order."""
    present = [n for n in names() if n in set(judged)] or [DEFAULT]
    return "; ".join(dict.fromkeys(get(n).describe_rule(tolerance) for n in present))


def evaluated_output(outputs) -> tuple[str, object]:
    """(task, output) `cnnexport eval` judges a model by: its first output of EVALUATED_FIRST's tasks."""
    for name in EVALUATED_FIRST:
        found = next((o for o in outputs if o.task == name), None)
        if found is not None:
            return name, found
    return DEFAULT, outputs[0] if outputs else None


def evaluate(runners: dict, data, spec, batch_size: int, top: int, progress) -> dict:
    """`cnnexport eval`: every runner on labelled ``data``, by the task of the output the model is judged by."""
    name, output = evaluated_output(spec.outputs)
    return importlib.import_module(get(name).EVAL).evaluate_output(runners, data, spec, output, batch_size, top, progress)


def render_eval(report: dict, console) -> None:
    """The table of an eval report, drawn by the task that made it (its "task"; a classifier's has none)."""
    importlib.import_module(get(report.get("task", DEFAULT)).EVAL).render(report, console)


def demos() -> dict[str, str]:
    """{task: the module of its `cnnexport demo --task`} for the tasks that have one."""
    return {name: get(name).DEMO for name in NAMES if hasattr(get(name), "DEMO")}
