"""How a stage option is written once (``opt``, ``Strict``), and the options every stage shares.

Each target's options model lives in its folder (exporter/targets/<target>/row.py), written with
these pieces; this module holds the shared ones (calibration data, tolerance overrides, detect
decoding). The CLI verbs (exporter/cli/params.py turns each field into a flag), the recipe schema
(exporter/recipe.py adds ``enabled`` to each model) and ``run``'s stage graph all read the
models; tests/test_stage_table.py fails when they disagree. A field's description is its
``--help`` text; ``flag`` in its extras is the CLI spelling when it is not ``--field-name``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)


def _split(pattern: str):
    """A list field that also takes what the CLI flags take: '1,28,28', '0.5 0.5', or one value."""

    def split(value):
        if isinstance(value, str):
            return [p for p in re.split(pattern, value.strip()) if p]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        if isinstance(value, list):  # a repeated flag: each occurrence may itself be a list (--exclude Conv,node_12)
            return [part for item in value for part in (split(item) if isinstance(item, str) else [item])]
        return value

    return BeforeValidator(split)


Numbers = _split(r"[,\s]+")  # --mean 0.5,0.5,0.5 / --batch-sizes 1,4
Shape = _split(r"[,\sxX]+")  # --input-shape 3,224,224 or 3x224x224
Names = _split(r"\s*,\s*")  # --exclude Conv,node_12


def opt(default: Any = None, help: str = "", flag: str | None = None, **constraints) -> Any:  # noqa: A002 - Typer's word
    """A field with its CLI help (and flag spelling when it is not --field-name)."""
    extra: dict[str, Any] | None = {"flag": flag} if flag else None
    if isinstance(default, list):
        return Field(default_factory=lambda d=default: list(d), description=help, json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Strict(BaseModel):
    """Unknown keys are an error (a recipe typo must not silently do nothing)."""

    model_config = ConfigDict(extra="forbid")


Method = Literal["minmax", "entropy", "percentile"]

FALLBACK_HELP = (
    "int8: auto = when the int8 rule fails on the held-out split, try the cheap fixes (other weight "
    "granularity, calibration, equalization, more samples), then keep in float the fewest layers, "
    "ranked by their measured effect (exporter/rescue/search.py)."
)


class Int8Rescue(Strict):
    """The INT8 rescue every int8 target offers (`--fallback auto` and its float budget); the search is one
    (exporter/rescue/search.py), each target says how to keep layers in float (its rescue hook)."""

    fallback: Literal["none", "auto"] = opt("none", FALLBACK_HELP)
    max_float_layers: Optional[int] = opt(
        None,
        "With --fallback auto: the most weighted layers the model may keep in float (default: the larger of "
        "2 and 25% of its weighted layers).",
        ge=0,
    )
    max_float_share: Optional[float] = opt(
        None,
        "With --fallback auto: the largest share (0-1) of weighted layers the model may keep in float; with "
        "--max-float-layers too, both hold.",
        ge=0,
        le=1,
    )

    @model_validator(mode="after")
    def _fallback_flags_need_fallback(self):
        limits = ("max_drop", "max_float_layers", "max_float_share")
        given = [name for name in limits if getattr(self, name, None) is not None]
        if given and self.fallback == "none":
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(
                f"{flags} only {'applies' if len(given) == 1 else 'apply'} with --fallback auto (fallback: auto in a recipe)"
            )
        if self.fallback != "none" and getattr(self, "precision", "int8") != "int8":
            raise ValueError(f"--fallback {self.fallback} rescues int8 only: add --precision int8")
        return self


class DataOptions(Strict):
    """Calibration (or evaluation) data: the recipe's `calibration` section, the verbs' --calib/--samples/--holdout."""

    data: Optional[str] = opt(
        None, "Calibration data: image folder, .npy/.npz of normalized inputs, or 'digits'.", flag="--calib"
    )
    samples: int = opt(256, "Calibration samples (seeded shuffle).", ge=1)
    holdout: int = opt(64, "Further samples kept out of calibration to verify on.", ge=0)


class ToleranceOverrides(Strict):
    max_rel_err: Optional[float] = opt(None, "Override: allowed max |error| / reference range.", gt=0)
    min_cosine: Optional[float] = opt(None, "Override: minimum per-sample cosine similarity.", ge=-1, le=1)
    min_top1: Optional[float] = opt(None, "Override: minimum top-1 agreement.", ge=0, le=1)


class DetectOptions(Strict):
    """How detect outputs are decoded before their boxes are compared (exporter/tasks/detect.py)."""

    conf: float = opt(0.25, "Detections: the confidence a box needs to be compared (Ultralytics' predict default).", gt=0, lt=1)
    iou: float = opt(
        0.7, "Detections: the IoU above which NMS drops the weaker box of a class (Ultralytics' default).", gt=0, le=1
    )


def flag_of(model: type[BaseModel], name: str) -> str:
    """The CLI spelling of a field: its declared flag, else --field-name."""
    extra = model.model_fields[name].json_schema_extra
    flag = extra.get("flag") if isinstance(extra, dict) else None
    return flag if isinstance(flag, str) and flag else "--" + name.replace("_", "-")


def default_of(model: type[BaseModel], name: str):
    field = model.model_fields[name]
    return field.get_default(call_default_factory=True)


def validate_model(model: type[BaseModel], data: dict, origin: str | None = None):
    """``model`` from ``data``; a problem is one sentence naming the dotted key (BadInputError, exit 2).

    Without ``origin`` the values came from the command line and the sentence names the flag.
    """
    from exporter.errors import BadInputError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(model, error, origin) for error in exc.errors()]
        prefix = f"{origin}: " if origin else ""
        if len(problems) == 1:
            raise BadInputError(prefix + problems[0]) from None
        listed = "".join(f"\n  - {problem}" for problem in problems)
        raise BadInputError(f"{prefix}{len(problems)} problems:{listed}") from None


def _problem(model: type[BaseModel], error, origin: str | None) -> str:
    """One validation error as 'where: what' (the flag on the command line, the dotted key in a recipe)."""
    if origin is None and error["loc"] and error["loc"][0] in model.model_fields:
        where = flag_of(model, str(error["loc"][0])).split("/")[0]
    else:
        where = ".".join(str(p) for p in error["loc"]) or ("" if origin is None else "(top level)")
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
