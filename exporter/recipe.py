"""Recipes: one YAML file that says which artifacts to build and how to check them.

Validated with pydantic: unknown keys and wrong types fail with the dotted path of the
offending key (exit 2). ``--set stages.coreml.precision=fp32`` overrides any key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, Field, create_model, field_validator

from exporter.errors import BadInputError
from exporter.kinds import KINDS
from exporter.measure.recommend import BenchSection
from exporter.options import DataOptions, DetectOptions, Numbers, Shape, Strict, ToleranceOverrides, validate_model


class ModelSection(Strict):
    arch: Optional[str] = None
    arch_kwargs: dict = Field(default_factory=dict)
    trust_pickle: bool = False
    weights: str = "model"  # model | ema | a top-level key | a key prefix ending in '.'
    input_shape: Annotated[Optional[tuple[int, int, int]], Shape] = None
    mean: Annotated[Optional[list[float]], Numbers] = None
    std: Annotated[Optional[list[float]], Numbers] = None
    labels: Optional[str] = None  # path of a labels file, relative to the working directory
    outputs: Optional[list[str]] = None  # keep only these outputs of forward (like --outputs); default: all
    task: Union[str, dict[str, str], None] = None  # classify|segment|detect|dense|regress, or {output: task} (like --task)


class VerifySection(Strict):
    enabled: bool = True
    batch_sizes: Annotated[list[int], Numbers] = Field(default_factory=lambda: [1, 4])
    seed: int = Field(default=0, ge=0)
    images: Optional[str] = None
    fp32: ToleranceOverrides = Field(default_factory=ToleranceOverrides)
    fp16: ToleranceOverrides = Field(default_factory=ToleranceOverrides)
    int8: ToleranceOverrides = Field(default_factory=ToleranceOverrides)
    detect: DetectOptions = Field(default_factory=DetectOptions)  # how detect outputs are decoded (conf, iou)

    @field_validator("batch_sizes")
    @classmethod
    def positive(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("batch sizes must be positive integers")
        return v


def stage_section(row) -> type[BaseModel]:
    """A recipe's stage section: the kind's options model plus ``enabled`` (and what only recipes spell)."""
    fields = {"enabled": (bool, row.recipe_enabled), **row.recipe_fields}
    return create_model(row.name.title().replace("_", "") + "Stage", __base__=row.options, **fields)


STAGE_SECTIONS: dict[str, type[BaseModel]] = {row.name: stage_section(row) for row in KINDS}
_STAGE_FIELDS: dict[str, Any] = {name: (section, Field(default_factory=section)) for name, section in STAGE_SECTIONS.items()}
Stages = create_model("Stages", __base__=Strict, **_STAGE_FIELDS)


class Outputs(Strict):
    name: Optional[str] = None  # artifact base name (default: the checkpoint's stem)

    @field_validator("name")
    @classmethod
    def plain_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or "/" in v or "\\" in v or v in (".", "..") or v.startswith(".")):
            raise ValueError("must be a plain file name: no folders, no leading dot (outputs stay inside the output folder)")
        return v


class Recipe(Strict):
    name: str = "custom"
    description: str = ""
    model: ModelSection = Field(default_factory=ModelSection)
    verify: VerifySection = Field(default_factory=VerifySection)
    calibration: DataOptions = Field(default_factory=DataOptions)
    evaluation: DataOptions = Field(default_factory=DataOptions)
    stages: Stages = Field(default_factory=Stages)  # type: ignore[valid-type]  # a model made by create_model above
    bench: BenchSection = Field(default_factory=BenchSection)
    outputs: Outputs = Field(default_factory=Outputs)


def recipes_dir() -> Path:
    """The shipped recipes: the repository's recipes/ folder, installed as package data (exporter.recipes)."""
    from importlib.resources import files

    return Path(str(files("exporter.recipes")))


def shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(recipes_dir().glob("*.yaml"))}


def resolve_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in shipped():
        return shipped()[str(name_or_path)]
    raise BadInputError(
        f"recipe {name_or_path} does not exist; give a YAML file or one of: {', '.join(shipped()) or '(none shipped)'}"
    )


def _set(data: dict, assignment: str) -> None:
    import yaml

    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise BadInputError(f"--set expects key.path=value, got {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise BadInputError(f"--set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def load(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, apply ``--set`` overrides, validate."""
    import yaml

    path = resolve_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInputError(f"recipe {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"recipe {path} cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"recipe {path} must be a mapping of sections (model, stages, ...)")
    for assignment in overrides:
        _set(data, assignment)
    return validate(data, str(path))


def validate(data: dict, origin: str = "recipe") -> Recipe:
    return validate_model(Recipe, data, origin)
