"""The table of artifact kinds: one record per kind, read by the pipeline, recipes, `run` and the CLI.

Adding a target is one stage module (what makes the artifact), one runner (what executes it)
and one row here with its options model (exporter/options.py); the recipe schema, `run`'s graph,
the verb's flags and the consistency test follow from the row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from exporter import options as o


def _fixed(precision: str) -> Callable[[BaseModel], str]:
    return lambda _options: precision


def _never(_options: BaseModel) -> bool:
    return False


def _always(_options: BaseModel) -> bool:
    return True


def _openvino_rule(options: o.OpenVINOOptions) -> str:
    """bf16 is judged by the fp16 rule."""
    return {"fp32": "fp32", "bf16": "fp16", "int8": "int8"}[options.precision]


def _coreml_precision(options: o.CoreMLOptions) -> str:
    """A weight-compressed program is judged by the int8 rule, others by their compute precision."""
    return "int8" if options.compress else options.precision


@dataclass(frozen=True)
class ArtifactKind:
    name: str  # the recipe's stage key
    kind: str  # what reports, manifests and tables call the artifact
    verb: str  # the CLI verb that builds it
    suffix: str  # resnet18.pt -> resnet18<suffix>
    source: str  # "checkpoint" | "onnx": what the stage reads (a checkpoint given to an onnx kind is exported first)
    options: type[BaseModel]  # the single source of its choices and defaults
    stage: str  # "module:function" that makes the artifact (exporter/stages/)
    build: str  # "module:function": the flow (stage, verify, install) taking a BuildRequest -> [ArtifactResult, ...]
    runner: str  # the runner kind (exporter.runners.open_runner) that executes it
    # which pass rule judges it, given its options (an instance of `options`, hence Any)
    precision: Callable[[Any], str]
    calibrates: Callable[[Any], bool] = _never  # needs calibration data
    reads_data: bool = False  # the calibration/evaluation settings are inputs of the stage (cache key)
    traces: bool = False  # runs torch.jit.trace / torch.export, which are not thread-safe
    folder: bool = False  # the artifact is a directory (.mlpackage)
    needs: tuple[str, ...] = ()  # recipe stages it can read from, in order of preference; () = the checkpoint
    recipe_enabled: bool = False  # on in a recipe that does not mention it
    recipe_fields: dict = field(default_factory=dict)  # {option: (type, default)} that a recipe spells differently
    check: str = ""  # "module:function(options)": refuse bad options / a missing backend before any work
    from_recipe: str = ""  # "module:function(options, recipe_section, out_dir, base) -> options": recipe_fields applied
    suffixes: dict = field(default_factory=dict)  # {options.precision: suffix} where the precision names the file
    # the backends that make and run it: their versions key its cache (exporter.run.stage_key) and fill its report
    packages: tuple[str, ...] = ()

    def versioned(self) -> tuple[str, ...]:
        """The packages whose versions decide this stage's output: the reference's and the row's own."""
        return REFERENCE_PACKAGES + tuple(p for p in self.packages if p not in REFERENCE_PACKAGES)

    def suffix_of(self, options: BaseModel) -> str:
        return self.suffixes.get(getattr(options, "precision", None), self.suffix)

    def builder(self) -> Callable:
        return _resolve(self.build)

    def stage_function(self) -> Callable:
        return _resolve(self.stage)

    def check_options(self, options: BaseModel) -> None:
        if self.check:
            _resolve(self.check)(options)

    def options_from_recipe(self, section: dict, out_dir, base: str) -> BaseModel:
        """The options a recipe's stage section stands for (its recipe-only keys resolved by the row's hook)."""
        options = self.parse({k: v for k, v in section.items() if k not in self.recipe_fields and k != "enabled"})
        return _resolve(self.from_recipe)(options, section, out_dir, base) if self.from_recipe else options

    def parse(self, values: dict | None = None, cli: bool = False) -> BaseModel:
        """The options model from a dict (a recipe's stage section minus recipe-only keys, or a verb's flags)."""
        return o.validate_model(self.options, values or {}, None if cli else f"stages.{self.name}")


def _resolve(dotted: str) -> Callable:
    module, _, function = dotted.partition(":")
    return getattr(importlib.import_module(module), function)


ONNX_INPUTS = ("simplify", "onnx")
REFERENCE_PACKAGES = ("torch", "torchvision", "numpy")  # the PyTorch reference every stage is verified against
ONNX_RUNTIME = ("onnx", "onnxruntime")  # reads and runs the ONNX every ONNX-based stage starts from

KINDS: tuple[ArtifactKind, ...] = (
    ArtifactKind(
        name="torchscript", kind="torchscript", verb="torchscript", suffix=".ts", source="checkpoint",
        options=o.TorchScriptOptions, stage="exporter.stages.torchscript:export", build="exporter.build:from_checkpoint",
        runner="torchscript", precision=_fixed("fp32"), traces=True,
        packages=(),
    ),
    ArtifactKind(
        name="onnx", kind="onnx", verb="onnx", suffix=".onnx", source="checkpoint",
        options=o.OnnxOptions, stage="exporter.stages.onnx:export", build="exporter.build:from_checkpoint",
        runner="onnx", precision=_fixed("fp32"), traces=True, recipe_enabled=True,
        packages=("onnxscript", *ONNX_RUNTIME),
    ),
    ArtifactKind(
        name="simplify", kind="simplify", verb="simplify", suffix=".sim.onnx", source="onnx",
        options=o.SimplifyOptions, stage="exporter.stages.simplify:export", build="exporter.build:simplify",
        runner="onnx", precision=_fixed("fp32"), needs=("onnx",),
        packages=(*ONNX_RUNTIME, "onnxsim"),
    ),
    ArtifactKind(
        name="int8", kind="int8-cpu", verb="quantize", suffix=".int8.onnx", source="onnx",
        options=o.Int8Options, stage="exporter.stages.quantize:export_int8", build="exporter.build:quantize",
        runner="onnx", precision=_fixed("int8"), calibrates=_always, reads_data=True, needs=ONNX_INPUTS,
        packages=ONNX_RUNTIME,
    ),
    ArtifactKind(
        name="int8_tensorrt", kind="int8-tensorrt", verb="quantize", suffix=".int8-trt.onnx", source="onnx",
        options=o.Int8Options, stage="exporter.stages.quantize:export_int8", build="exporter.build:quantize",
        runner="onnx", precision=_fixed("int8"), calibrates=_always, reads_data=True, needs=ONNX_INPUTS,
        packages=ONNX_RUNTIME,
    ),
    ArtifactKind(
        name="fp16", kind="fp16", verb="quantize", suffix=".fp16.onnx", source="onnx",
        options=o.Fp16Options, stage="exporter.stages.fp16:export_fp16", build="exporter.build:quantize",
        runner="onnx", precision=_fixed("fp16"), reads_data=True, needs=ONNX_INPUTS,
        packages=ONNX_RUNTIME,
    ),
    ArtifactKind(
        name="coreml", kind="coreml", verb="coreml", suffix=".mlpackage", source="checkpoint",
        options=o.CoreMLOptions, stage="exporter.stages.coreml:export", build="exporter.build:coreml",
        runner="coreml", precision=_coreml_precision, traces=True, folder=True, check="exporter.stages.coreml:check_options",
        packages=("coremltools",),
    ),
    ArtifactKind(
        name="tensorrt", kind="tensorrt", verb="tensorrt", suffix=".engine", source="onnx",
        options=o.TensorRTOptions, stage="exporter.tensorrt.build:build_engine", build="exporter.build:tensorrt",
        runner="tensorrt", precision=lambda opts: opts.precision, calibrates=lambda opts: opts.precision == "int8",
        reads_data=True, needs=ONNX_INPUTS, check="exporter.tensorrt.flow:check_options",
        # a recipe cannot name a folder for every machine: it says whether to write the build kit
        # (beside the artifacts) where TensorRT is absent
        recipe_fields={"emit_script": (bool, True)}, from_recipe="exporter.tensorrt.flow:options_from_recipe",
        packages=(*ONNX_RUNTIME, "tensorrt"),
    ),
    ArtifactKind(
        name="openvino", kind="openvino", verb="openvino", suffix=".xml", source="onnx",
        options=o.OpenVINOOptions, stage="exporter.stages.openvino:export", build="exporter.build:openvino",
        runner="openvino", precision=_openvino_rule, calibrates=lambda opts: opts.precision == "int8",
        reads_data=True, needs=ONNX_INPUTS, check="exporter.stages.openvino:check_options",
        suffixes={"bf16": ".bf16.xml", "int8": ".int8.xml"},
        packages=(*ONNX_RUNTIME, "openvino", "nncf"),
    ),
)

BY_NAME = {k.name: k for k in KINDS}


def versioned_packages() -> tuple[str, ...]:
    """Every backend some row names, in table order: what reports list and caches key on."""
    out: list[str] = []
    for row in KINDS:
        out += [p for p in row.versioned() if p not in out]
    return tuple(out)


def get(name: str) -> ArtifactKind:
    from exporter.errors import BadInputError

    if name not in BY_NAME:
        raise BadInputError(f"unknown artifact kind {name!r}; choose one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def quantize_kind(precision: str, target: str) -> ArtifactKind:
    """`cnnexport quantize --precision P --target T` -> its row."""
    return BY_NAME["fp16"] if precision == "fp16" else BY_NAME["int8_tensorrt" if target == "tensorrt" else "int8"]
