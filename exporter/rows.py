"""The stage table's records: ArtifactKind (one row per artifact kind) and Format (how its files are recognised and run).

A row is the whole plug-in: its options model, the stage that makes the artifact, the Format
that recognises and runs its files (runner factory, suffixes, content check, bench devices), the
backend packages that key its cache, its recipe section and its verb. The rows live in their
target folders (exporter/targets/<target>/row.py) and in plug-ins; exporter/kinds.py holds the
table they are registered in. This module has no side effects, so a row module can import it
first without loading the table (which imports every row module).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from exporter import options as o


def _never(_options: BaseModel) -> bool:
    return False


@dataclass(frozen=True)
class Format:
    """How an artifact's files are recognised and executed; several rows can share one (every ONNX kind)."""

    name: str  # what detect_kind returns and open_runner takes
    runner: str  # "module:function(path, threads=None, device=...) -> Runner", imported when a file is opened
    suffixes: tuple[str, ...] = ()  # file names it claims by suffix
    detect: str = ""  # "module:function(path) -> bool" for files no suffix names (a TorchScript zip)
    globs: tuple[str, ...] = ()  # what `bench FOLDER` searches for besides the suffixes
    bench_devices: tuple[str, ...] = ("cpu",)  # devices `bench` can time it on ("cpu", "cuda"); () = never
    describe: str = ""  # how the CLI names it in "expected ..." messages
    also_runs_on: tuple[str, ...] = ()  # other Formats whose runner executes these files too (`bench --runtime`)
    # "module:function(folder, progress) -> dict | None": what `verify` checks in a folder that stands for an
    # artifact built elsewhere (TensorRT's build kit), None when the folder is not one; the dict's "summary" is shown
    kit: str = ""
    layers: bool = False  # `debug` compares it with PyTorch layer by layer (exporter/rescue/debug.py reads ONNX)
    # files written beside an artifact, replaced and removed with it: NAME + suffix (ONNX external data, a
    # TensorRT sidecar), and NAME with its suffix swapped, for the artifact and its rejected copy (OpenVINO's .bin)
    companion_suffixes: tuple[str, ...] = ()
    companion_swaps: tuple[str, ...] = ()
    # "module:function(path, precision, input_sets) -> [Check | None]": checks beyond comparing outputs
    checks: str = ""
    runtime: str = ""  # what executes its files, as `bench` recommends it ("onnxruntime", "torch"); default: its name

    def open(self, path, **kwargs):
        return resolve(self.runner)(path, **kwargs)

    def claims(self, path) -> bool:
        from pathlib import Path

        path = Path(path)
        if path.suffix.lower() in self.suffixes:
            return True
        return bool(self.detect) and path.is_file() and resolve(self.detect)(path)

    def check_kit(self, folder, progress):
        """The checks of a folder standing for this format's artifact, or None when it is not such a folder."""
        return resolve(self.kit)(folder, progress) if self.kit else None

    def patterns(self) -> tuple[str, ...]:
        return tuple(f"*{s}" for s in self.suffixes) + self.globs


@dataclass(frozen=True)
class ArtifactKind:
    name: str  # the recipe's stage key
    kind: str  # what reports, manifests and tables call the artifact
    verb: str  # the CLI verb that builds it
    suffix: str  # resnet18.pt -> resnet18<suffix>
    source: str  # "checkpoint", or the row whose artifact the stage reads ("onnx": a checkpoint is exported to it first)
    options: type[BaseModel]  # the single source of its choices and defaults
    # "module:function(StageRequest) -> StageOutput" that makes the artifact (exporter/stages/); "" where the
    # row's build flow makes it itself (tensorrt: the engine, after the int8 / fp16 ONNX it is built from)
    stage: str
    build: str  # "module:function": the flow (stage, verify, install) taking a BuildRequest -> [ArtifactResult, ...];
    # exporter.build:from_checkpoint or :from_onnx for every row but int8 (its --fallback search) and tensorrt
    format: Format  # what recognises and executes its files (exporter.runners.open_runner)
    # which pass rule judges it, given its options (an instance of `options`, hence Any)
    precision: Callable[[Any], str]
    calibrates: Callable[[Any], bool] = _never  # needs calibration data
    reads_data: bool = False  # the calibration/evaluation settings are inputs of the stage (cache key)
    traces: bool = False  # runs torch.jit.trace / torch.export, which are not thread-safe
    folder: bool = False  # the artifact is a directory (.mlpackage)
    needs: tuple[str, ...] = ()  # recipe stages it can read from, in order of preference; () = the checkpoint
    needs_of: str = ""  # "module:function(options) -> tuple": `needs` where they depend on its options (tensorrt int8)
    recipe_enabled: bool = False  # on in a recipe that does not mention it
    recipe_fields: dict = field(default_factory=dict)  # {option: (type, default)} that a recipe spells differently
    check: str = ""  # "module:function(options)": refuse bad options / a missing backend before any work
    from_recipe: str = ""  # "module:function(options, recipe_section, out_dir, base) -> options": recipe_fields applied
    suffixes: dict = field(default_factory=dict)  # {options.precision: suffix} where the precision names the file
    # the backends that make and run it: their versions key its cache (exporter.run_cache.stage_key) and fill its report
    packages: tuple[str, ...] = ()
    verify_batches: str = ""  # "module:function(options, batch_sizes) -> batch_sizes": sizes the artifact accepts
    # "module:function(options) -> [(path, is_folder)]": what the stage writes besides its artifact (a build kit)
    extra_outputs: str = ""
    checks_source: bool = False  # an ONNX-sourced fp32 artifact also compared with the ONNX it was made from
    bench: str | None = "cpu"  # where a recipe's bench step times it ("cpu"); None: not a CPU deployment artifact
    needs_gpu: bool = False  # a fleet on Ray runs it only on a node with a GPU (Ray's "GPU" resource)
    help: str = ""  # the verb's help, for a verb generated from the row (exporter/cli/export.py)
    flag_help: dict = field(default_factory=dict)  # {parameter: help} where the generated verb says more than the shared text
    without_flags: tuple[str, ...] = ()  # shared parameters its verb does not take (tensorrt: batch_sizes, eval_data)
    # "module:function(request) -> RescueTarget": how `--fallback auto` keeps named layers in float (rescue/flow.py)
    rescue: str = ""
    command: str = ""  # "module:function(app)": registers a hand-made verb instead (quantize: three rows behind two flags)

    @property
    def runner(self) -> str:
        """The name of its Format: what open_runner and the verifier are given."""
        return self.format.name

    def versioned(self) -> tuple[str, ...]:
        """The packages whose versions decide this stage's output: the reference's and the row's own."""
        return REFERENCE_PACKAGES + tuple(p for p in self.packages if p not in REFERENCE_PACKAGES)

    def suffix_of(self, options: BaseModel) -> str:
        return self.suffixes.get(getattr(options, "precision", None), self.suffix)

    def builder(self) -> Callable:
        return resolve(self.build)

    def stage_function(self) -> Callable:
        if not self.stage:
            raise ValueError(f"{self.name} has no stage function: its build flow makes the artifact")
        return resolve(self.stage)

    def upstream_choices(self, options: BaseModel) -> tuple[str, ...]:
        """The recipe stages this stage can read from, in order of preference, given its options."""
        return tuple(resolve(self.needs_of)(options)) if self.needs_of else self.needs

    def extra_outputs_of(self, options: BaseModel) -> list:
        """[(path, is_folder)] the stage writes besides its artifact and companions, planned (and guarded) before any work."""
        return list(resolve(self.extra_outputs)(options)) if self.extra_outputs else []

    def check_options(self, options: BaseModel) -> None:
        if self.check:
            resolve(self.check)(options)

    def options_from_recipe(self, section: dict, out_dir, base: str) -> BaseModel:
        """The options a recipe's stage section stands for (its recipe-only keys resolved by the row's hook)."""
        options = self.parse({k: v for k, v in section.items() if k not in self.recipe_fields and k != "enabled"})
        return resolve(self.from_recipe)(options, section, out_dir, base) if self.from_recipe else options

    def parse(self, values: dict | None = None, cli: bool = False) -> BaseModel:
        """The options model from a dict (a recipe's stage section minus recipe-only keys, or a verb's flags)."""
        return o.validate_model(self.options, values or {}, None if cli else f"stages.{self.name}")


def resolve(dotted: str) -> Callable:
    module, _, function = dotted.partition(":")
    return getattr(importlib.import_module(module), function)


REFERENCE_PACKAGES = ("torch", "torchvision", "numpy")  # the PyTorch reference every stage is verified against
