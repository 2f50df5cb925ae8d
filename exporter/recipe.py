"""Recipes: one YAML file that says which artifacts to build and how to check them.

Validated with pydantic: unknown keys and wrong types fail with the dotted path of the
offending key (exit 2). ``--set stages.coreml.precision=fp32`` overrides any key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from exporter.errors import BadInputError
from exporter.tensorrt.version import DEFAULT_VERSION as DEFAULT_TRT_VERSION

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def _split(pattern: str):
    """A list field that also takes what the CLI flags take: '1,28,28', '0.5 0.5', or one value."""

    def split(value):
        if isinstance(value, str):
            return [p for p in re.split(pattern, value.strip()) if p]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        return value

    return BeforeValidator(split)


Numbers = _split(r"[,\s]+")  # --mean 0.5,0.5,0.5 / --batch-sizes 1,4
Shape = _split(r"[,\sxX]+")  # --input-shape 3,224,224 or 3x224x224
Names = _split(r"\s*,\s*")  # --exclude Conv,node_12


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(Strict):
    arch: Optional[str] = None
    arch_kwargs: dict = Field(default_factory=dict)
    trust_pickle: bool = False
    weights: str = "model"  # model | ema | a top-level key | a key prefix ending in '.'
    input_shape: Annotated[Optional[tuple[int, int, int]], Shape] = None
    mean: Annotated[Optional[list[float]], Numbers] = None
    std: Annotated[Optional[list[float]], Numbers] = None
    labels: Optional[str] = None  # path of a labels file, relative to the working directory


class ToleranceOverrides(Strict):
    max_rel_err: Optional[float] = None
    min_cosine: Optional[float] = None
    min_top1: Optional[float] = None


class VerifySection(Strict):
    enabled: bool = True
    batch_sizes: Annotated[list[int], Numbers] = Field(default_factory=lambda: [1, 4])
    seed: int = 0
    images: Optional[str] = None
    fp32: ToleranceOverrides = Field(default_factory=ToleranceOverrides)
    fp16: ToleranceOverrides = Field(default_factory=ToleranceOverrides)
    int8: ToleranceOverrides = Field(default_factory=ToleranceOverrides)

    @field_validator("batch_sizes")
    @classmethod
    def positive(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("batch sizes must be positive integers")
        return v


class DataSection(Strict):
    data: Optional[str] = None  # folder, .npy/.npz, or 'digits'
    samples: int = Field(256, ge=1)
    holdout: int = Field(64, ge=0)


class TorchScriptStage(Strict):
    enabled: bool = False
    script: bool = False


class OnnxStage(Strict):
    enabled: bool = True
    opset: Optional[int] = None
    exporter: Literal["dynamo", "legacy"] = "dynamo"
    input_name: str = "input"
    output_name: str = "logits"


class SimplifyStage(Strict):
    enabled: bool = False


class Int8Stage(Strict):
    enabled: bool = False
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    exclude: Annotated[list[str], Names] = Field(default_factory=list)
    trt_version: str = DEFAULT_TRT_VERSION


class Fp16Stage(Strict):
    enabled: bool = False
    keep_io_types: bool = True
    overflow: Literal["keep", "fail", "ignore"] = "keep"


class CoreMLStage(Strict):
    enabled: bool = False
    precision: Literal["fp16", "fp32"] = "fp16"
    image_input: bool = False
    classifier: bool = False
    batch: Optional[str] = None  # "MIN:MAX" or "N"
    min_target: Optional[str] = None
    compress: Optional[str] = None  # palettize:N | linear8
    author: Optional[str] = None
    license: Optional[str] = None
    version: Optional[str] = None
    description: Optional[str] = None


class TensorRTStage(Strict):
    enabled: bool = False
    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    int8_mode: Literal["qdq", "calibrator"] = "qdq"
    batch: str = "1:8:32"
    workspace: Optional[str] = None
    optimization_level: Optional[int] = None
    hardware_compatibility: Literal["none", "ampere_plus", "same_cc"] = "none"
    version_compatible: bool = False
    trt_version: Optional[str] = None
    emit_script: bool = True  # without TensorRT here: write the build kit instead


class Stages(Strict):
    torchscript: TorchScriptStage = Field(default_factory=TorchScriptStage)
    onnx: OnnxStage = Field(default_factory=OnnxStage)
    simplify: SimplifyStage = Field(default_factory=SimplifyStage)
    int8: Int8Stage = Field(default_factory=Int8Stage)
    int8_tensorrt: Int8Stage = Field(default_factory=Int8Stage)
    fp16: Fp16Stage = Field(default_factory=Fp16Stage)
    coreml: CoreMLStage = Field(default_factory=CoreMLStage)
    tensorrt: TensorRTStage = Field(default_factory=TensorRTStage)


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
    calibration: DataSection = Field(default_factory=DataSection)
    evaluation: DataSection = Field(default_factory=DataSection)
    stages: Stages = Field(default_factory=Stages)
    outputs: Outputs = Field(default_factory=Outputs)


def shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


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
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise BadInputError(f"{origin}: {where}: {message}{more}") from None
