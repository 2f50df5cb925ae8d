"""The verbs' flags: shared ones written here once, stage ones generated from the options models.

A stage option is a field of its options model (exporter/targets/<target>/row.py): its type and choices (a Literal
becomes a choice), default and help become the flag, so a new option is one line there.
``command`` registers a verb whose parameters are such a list; Typer reads the signature.
"""

from __future__ import annotations

import inspect
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal, Optional, Union, get_args, get_origin

import typer
from typer.core import TyperCommand, TyperGroup

from exporter.options import DetectOptions, ToleranceOverrides, default_of, flag_of

KEYWORD = inspect.Parameter.KEYWORD_ONLY

Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (default: beside the input).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON report object on stdout (tables go away).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and details.")]
Arch = Annotated[
    Optional[str],
    typer.Option(
        "--arch",
        help="Registry name (see `cnnexport architectures`), file.py:ClassName or package.module:factory. "
        "Default: inferred from the checkpoint's keys and shapes.",
    ),
]
ArchKwargs = Annotated[
    Optional[str], typer.Option("--arch-kwargs", help="JSON keyword arguments for the builder, e.g. '{\"num_classes\": 7}'.")
]
TrustPickle = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help="Allow loading a whole pickled model. Unpickling runs code from the file: only for files you trust.",
    ),
]
Weights = Annotated[
    str,
    typer.Option(
        "--weights",
        help="Which weights of a training checkpoint: model (default), ema (torchvision's model_ema, timm's "
        "state_dict_ema), another top-level key, or a key prefix ending in '.' (e.g. model. of a Lightning .ckpt).",
    ),
]
Outputs = Annotated[
    Optional[str],
    typer.Option(
        "--outputs",
        help="Keep only these outputs of what forward returns, by name (e.g. out to drop a "
        "segmentation model's aux head); default: every output. The names are paths: out, aux, 0, 1.cls.",
    ),
]
Task = Annotated[
    Optional[str],
    typer.Option(
        "--task",
        help="How outputs are judged: classify|segment|dense|regress|detect|features (or a plug-in's task) for all, "
        "or NAME=TASK,... (default: from each output's shape: (N,C) classify, (N,C,H,W) segment, (N,1,H,W) dense, "
        "else regress; a detector's or a backbone's source says so).",
    ),
]
InputShape = Annotated[Optional[str], typer.Option("--input-shape", help="Input C,H,W (default: the architecture's).")]
Mean = Annotated[Optional[str], typer.Option("--mean", help="Per-channel normalization mean, e.g. 0.485,0.456,0.406.")]
Std = Annotated[Optional[str], typer.Option("--std", help="Per-channel normalization std.")]
Labels = Annotated[Optional[Path], typer.Option("--labels", help="Text file with one class name per line.")]
NoVerify = Annotated[bool, typer.Option("--no-verify", help="Skip verification (reported as skipped, never pass).")]
BatchSizes = Annotated[
    str, typer.Option("--batch-sizes", help="Batch sizes verified (two or more prove the dynamic batch axis).")
]
Images = Annotated[
    Optional[Path],
    typer.Option("--images", help="Also verify on real inputs: a folder of images, or a .npy/.npz of normalized NCHW arrays."),
]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Seed of the random verification inputs.")]
KeepFailed = Annotated[
    bool, typer.Option("--keep-failed", help="Keep an artifact that failed verification as NAME.rejected.EXT.")
]
Reference = Annotated[
    Optional[Path], typer.Option("--checkpoint", help="PyTorch reference when MODEL is ONNX (default: the ONNX model).")
]


def param(name: str, annotation, default=inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, KEYWORD, annotation=annotation, default=default)


def argument(name: str, annotation, help: str) -> inspect.Parameter:  # noqa: A002 - Typer's word
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[annotation, typer.Argument(help=help)]
    )


LOAD = [
    param("arch", Arch, None),
    param("arch_kwargs", ArchKwargs, None),
    param("trust_pickle", TrustPickle, False),
    param("weights", Weights, "model"),
    param("outputs", Outputs, None),
    param("task", Task, None),
]
SPEC = [param("input_shape", InputShape, None), param("mean", Mean, None), param("std", Std, None), param("labels", Labels, None)]


@cache
def choices(model, name: str) -> type[Enum]:
    """A Literal field's choices as the Enum Typer shows (``--exporter [dynamo|legacy]``)."""
    values = get_args(model.model_fields[name].annotation)
    return Enum(f"{model.__name__}_{name}", {str(v): str(v) for v in values}, type=str)  # type: ignore[return-value]  # the functional API makes a class


def _is_list(annotation) -> bool:
    return get_origin(annotation) is list


def _optional_inner(annotation):
    if get_origin(annotation) is Union:
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation


def stage_params(model, skip: tuple[str, ...] = (), rename: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One flag per field of ``model``: its declared flag, type or choices, default and help."""
    out = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        annotation, default = field.annotation, default_of(model, name)
        if get_origin(_optional_inner(annotation)) is Literal:
            enum = choices(model, name)
            annotation, default = enum, (enum(default) if default is not None else None)
        elif _is_list(annotation):
            annotation, default = Optional[list[str]], None  # repeatable; none given = the model's default
        option = typer.Option(flag_of(model, name), help=field.description or "")
        out.append(param((rename or {}).get(name, name), Annotated[annotation, option], default))
    return out


TOLERANCES = stage_params(ToleranceOverrides)  # --max-rel-err, --min-cosine, --min-top1: the recipe's verify.<precision> keys
MaxRelErr, MinCosine, MinTop1 = (p.annotation for p in TOLERANCES)
DETECT = stage_params(DetectOptions)  # --conf, --iou: the recipe's verify.detect keys
Conf, Iou = (p.annotation for p in DETECT)
VERIFY_INPUTS = [param("images", Images, None), param("seed", Seed, 0), *TOLERANCES, *DETECT]
Junit = Annotated[
    Optional[Path],
    typer.Option(
        "--junit",
        help="Also write the verdicts as JUnit XML to FILE for CI (a test case per artifact and per output); "
        "$GITHUB_STEP_SUMMARY, where set, gets the table.",
    ),
]
VERIFY = [
    param("no_verify", NoVerify, False),
    param("batch_sizes", BatchSizes, "1,4"),
    *VERIFY_INPUTS,
    param("keep_failed", KeepFailed, False),
    param("junit", Junit, None),
]
UI = [param("json_out", JsonOut, False), param("quiet", Quiet, False), param("verbose", Verbose, False)]


def plain(value):
    """A CLI value as the options model takes it (choices back to strings)."""
    return value.value if isinstance(value, Enum) else value


def values_for(model, given: dict, rename: dict[str, str] | None = None) -> dict:
    """The fields of ``model`` found among a verb's parsed arguments (a list flag not given keeps the default)."""
    rename = rename or {}
    out = {}
    for name in model.model_fields:
        key = rename.get(name, name)
        if key in given and not (given[key] is None and _is_list(model.model_fields[name].annotation)):
            out[name] = plain(given[key])
    return out


class FlagsTakeNoValue:
    """A flag (--json, --quiet, --help, ...) shows no `<bool>` in --help.

    Typer 0.29 prints the type of every option, flags included, which reads as if they took a value.
    """

    def get_params(self, ctx):
        params = super().get_params(ctx)  # click.Command's, in the classes below
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Command(FlagsTakeNoValue, TyperCommand):
    """Every verb's click command."""


class Group(FlagsTakeNoValue, TyperGroup):
    """The `cnnexport` group itself (its --help)."""


def command(app: typer.Typer, name: str, parameters: list[inspect.Parameter], doc: str):
    """Register ``body(args: dict)`` as the verb ``name`` taking ``parameters``."""

    def register(body):
        def handler(**kwargs):
            return body(kwargs)

        handler.__signature__ = inspect.Signature(parameters)
        handler.__doc__ = doc
        handler.__name__ = name
        app.command(name=name, cls=Command)(handler)
        return body

    return register
