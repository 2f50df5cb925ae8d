"""One contract (exporter/runners/base.py), one test for every runner.

Each case opens a real small artifact of simple_cnn exported by cnnexport and checks the same
behaviour: NumPy float32 in, {name: NumPy array} out, the input's batch out (chunked or padded
inside a declared range), the declared attributes with their declared types, the spec written
at export in ``metadata``, typed cnnexport errors, and agreement with the PyTorch reference.

Two runtimes cannot run on this Linux CPU machine and are replaced by small fakes that
implement exactly the calls their runner makes, while the runner code itself runs unchanged:

* Core ML predict (macOS only): ``platform.system`` says Darwin and ``coremltools.models.MLModel``
  is a fake whose ``predict`` executes the package's own MIL program (the interpreter) and refuses
  batches outside the package's range, as Core ML does. It tests the runner's feeding and output
  handling, not Core ML's numerics.
* TensorRT: a fake ``tensorrt`` module whose "engine" is the exported ONNX model behind a header
  with the optimization profile. The fake execution context reads its input from, and writes its
  outputs to, the addresses the runner sets, and refuses shapes outside the profile. The runner's
  device memory is ``TorchDeviceMemory("cpu")`` (host tensors); on a GPU it is the same class on
  ``"cuda"``.
"""

from __future__ import annotations

import copy
import ctypes
import importlib
import importlib.util
import inspect
import json
import pkgutil
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from exporter.errors import BadInputError
from exporter.runners import open_runner
from exporter.runners.base import CONTRACT_ATTRIBUTES, Runner

torch = pytest.importorskip("torch")

FP32_MAX_ABS_ERR = 1e-6  # simple_cnn's logits span ~0.3 here; the fp32 runtimes differ from PyTorch by < 1e-7


# ----------------------------------------------------------------- the artifacts, built once


@pytest.fixture(scope="module")
def loaded(simple_cnn_ckpt):
    from exporter import load_checkpoint

    return load_checkpoint(simple_cnn_ckpt, arch="simple_cnn")


@pytest.fixture(scope="module")
def artifacts(loaded, tmp_path_factory) -> dict[str, Path]:
    """simple_cnn as ONNX, TorchScript and an fp32 Core ML package (verification is what these tests do)."""
    from exporter import VerifyOptions, export_artifact

    folder = tmp_path_factory.mktemp("contract")
    paths = {}
    made = (("onnx", "m.onnx", {}), ("torchscript", "m.ts", {}), ("coreml", "m.mlpackage", {"precision": "fp32"}))
    for kind, name, options in made:
        if kind == "coreml" and importlib.util.find_spec("coremltools") is None:
            continue  # its cases skip, saying so
        result = export_artifact(kind, loaded, folder / name, options, VerifyOptions(enabled=False))
        assert result.path.exists(), result
        paths[kind] = result.path
    if importlib.util.find_spec("openvino") is not None:
        from exporter.build import build

        paths["openvino"] = build(
            "openvino", paths["onnx"], output=folder / "m.xml", loaded=loaded, verify=VerifyOptions(enabled=False)
        )[-1].path
    for kind, name, module in (("executorch", "m.pte", "executorch.runtime"), ("litert", "m.tflite", "ai_edge_litert")):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            paths[kind] = export_artifact(kind, loaded, folder / name, {}, VerifyOptions(enabled=False)).path
    return paths


# ----------------------------------------------------------------- fake Core ML predict


class FakeMLModel:
    """coremltools.models.MLModel on a machine without Core ML: predict runs the package's MIL program."""

    def __init__(self, path: str, compute_units=None):
        from exporter.targets.coreml.mil.package import MLPackage
        from exporter.targets.coreml.mil.program import Program

        self.package = MLPackage(Path(path))
        self.program = Program(self.package)
        feature = self.package.spec.description.input[0]
        self.input_name = feature.name
        ranges = feature.type.multiArrayType.shapeRange.sizeRanges
        self.batch_range = (ranges[0].lowerBound, ranges[0].upperBound) if ranges else None
        self.calls: list[int] = []

    def predict(self, data: dict) -> dict:
        ((name, value),) = data.items()
        assert name == self.input_name and isinstance(value, np.ndarray) and value.dtype == np.float32
        if self.batch_range and not self.batch_range[0] <= len(value) <= self.batch_range[1]:
            raise RuntimeError(f"batch {len(value)} outside the model's shape range {self.batch_range}")
        self.calls.append(len(value))
        return {k: np.asarray(v) for k, v in self.program.run({name: value}).items()}


def _darwin_with_fake_coreml(monkeypatch):
    import platform

    import coremltools as ct

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(ct.models, "MLModel", FakeMLModel)


# ----------------------------------------------------------------- fake TensorRT

ENGINE_MAGIC = b"FAKE-TENSORRT-ENGINE\n"
MACHINE = {"tensorrt_version": "10.8.0", "gpu": "Fake GPU", "compute_capability": "9.0"}


def _fake_tensorrt() -> types.ModuleType:
    """The tensorrt API calls TensorRTRunner makes, over an ONNX model run by onnxruntime."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = MACHINE["tensorrt_version"]

    class Logger:
        ERROR = 2

        def __init__(self, severity):
            self.severity = severity

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class DataType:
        FLOAT = "FLOAT"

    def nptype(dtype):
        return {DataType.FLOAT: np.float32}[dtype]

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.runs = engine, {}, {}, []

        def set_input_shape(self, name, shape):
            low, high = self.engine.profile
            if name != self.engine.input or not low <= shape[0] <= high or tuple(shape[1:]) != self.engine.chw:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            n = self.shapes[self.engine.input][0]
            if name == self.engine.input:
                return self.shapes[name]
            return tuple(n if not isinstance(d, int) else d for d in self.engine.output_shapes[name])

        def set_tensor_address(self, name, address):
            assert isinstance(address, int) and address
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int)
            shape = self.shapes[self.engine.input]
            x = _host_array(self.addresses[self.engine.input], shape).copy()
            self.runs.append(shape[0])
            values = self.engine.session.run(None, {self.engine.input: x})
            for name, value in zip(self.engine.outputs, values):
                _host_array(self.addresses[name], value.shape)[...] = value
            return True

    class Engine:
        def __init__(self, header: dict, onnx_bytes: bytes):
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            (inp,) = self.session.get_inputs()
            self.input, self.chw = inp.name, tuple(inp.shape[1:])
            self.input_shape = tuple(-1 if not isinstance(d, int) else d for d in inp.shape)
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.output_shapes = {o.name: o.shape for o in self.session.get_outputs()}
            self.profile = (header["min"], header["max"])
            self.contexts: list[Context] = []

        @property
        def num_io_tensors(self):
            return 1 + len(self.outputs)

        def get_tensor_name(self, index):
            return [self.input, *self.outputs][index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == self.input else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def get_tensor_shape(self, name):
            assert name == self.input
            return self.input_shape

        def create_execution_context(self):
            self.contexts.append(Context(self))
            return self.contexts[-1]

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes):
            if not data.startswith(ENGINE_MAGIC):
                return None
            header, onnx_bytes = data[len(ENGINE_MAGIC) :].split(b"\n", 1)
            return Engine(json.loads(header), onnx_bytes)

    trt.Logger, trt.TensorIOMode, trt.DataType, trt.nptype, trt.Runtime = Logger, TensorIOMode, DataType, nptype, Runtime
    return trt


def _host_array(address: int, shape) -> np.ndarray:
    """The float32 array at ``address`` (host memory: TorchDeviceMemory("cpu") tensors)."""
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address)).reshape(shape)


def _fake_engine(onnx_path: Path, engine: Path, spec, low: int, high: int) -> Path:
    """An engine file for the fake runtime and the sidecar `cnnexport tensorrt` would write beside it."""
    import exporter.targets.tensorrt as trt_stage

    engine.write_bytes(ENGINE_MAGIC + json.dumps({"min": low, "max": high}).encode() + b"\n" + onnx_path.read_bytes())
    plan = trt_stage.decide_plan(MACHINE["tensorrt_version"], "fp32")
    options = trt_stage.BuildOptions(trt_stage.parse_batch_profile(f"{low}:{low}:{high}"))
    sidecar = trt_stage.sidecar_partial(plan, options, "input", spec.input_shape, onnx_path, "0" * 64, spec.to_dict())
    trt_stage.sidecar_path(engine).write_text(json.dumps({**sidecar, **MACHINE}))
    return engine


def _fake_tensorrt_machine(monkeypatch):
    import exporter.targets.tensorrt.runner as trt_runner
    from exporter.targets.tensorrt import machine as trt_stage

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    monkeypatch.setattr(trt_stage, "cuda_status", lambda: (True, ""))
    monkeypatch.setattr(trt_runner, "machine_description", lambda: dict(MACHINE))


# ----------------------------------------------------------------- the cases


@dataclass
class Case:
    id: str
    open: Callable[[Env], Runner]
    cls: str  # the runner class open_runner must pick for the file (module:Class), "" for no file
    batch_dim: object
    batch_range: tuple | None
    precision: str | None
    has_metadata: bool = True
    suffix: str = ""
    damage: Callable[[Path, Path], None] | None = None  # (path, the good artifact): a damaged artifact of this kind at path
    fixed_batch: int | None = None  # the batch the export fixed on purpose (a LiteRT model is made at batch 1)


def _open_torch(env):
    from exporter.runners.torch import TorchRunner

    return TorchRunner(env.loaded.module)


def _open_torch_cuda(env):
    from exporter.runners.torch import TorchRunner

    if not torch.cuda.is_available():
        pytest.skip("TorchRunner(device='cuda') needs a CUDA GPU")
    return TorchRunner(copy.deepcopy(env.loaded.module), device="cuda")


def _open_torchscript(env):
    from exporter.targets.torchscript.runner import TorchScriptRunner

    return TorchScriptRunner(env.path)


def _open_onnxruntime(env):
    from exporter.targets.onnx.runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(env.path)


def _open_mil(env):
    from exporter.targets.coreml.mil_runner import MilRunner

    return MilRunner(env.path)


def _open_coreml(env):
    from exporter.targets.coreml.runner import CoreMLRunner

    _darwin_with_fake_coreml(env.monkeypatch)
    return CoreMLRunner(env.path)


def _open_tensorrt(env):
    from exporter.targets.tensorrt.runner import TensorRTRunner, TorchDeviceMemory

    _fake_tensorrt_machine(env.monkeypatch)
    return TensorRTRunner(env.path, memory=TorchDeviceMemory("cpu"))


def _open_openvino(env):
    from exporter.targets.openvino.runner import OpenVINORunner

    return OpenVINORunner(env.path)


def _open_executorch(env):
    from exporter.targets.executorch.runner import ExecuTorchRunner

    return ExecuTorchRunner(env.path)


def _open_litert(env):
    from exporter.targets.litert.runner import LiteRTRunner

    return LiteRTRunner(env.path)


def _garbage_ir(path: Path, good: Path) -> None:
    _garbage(path, good)
    path.with_suffix(".bin").write_bytes(good.with_suffix(".bin").read_bytes())  # good weights, a broken graph


def _garbage(path: Path, good: Path) -> None:
    path.write_bytes(b"\x00 not an artifact \xff" * 8)


def _empty_package(path: Path, good: Path) -> None:
    path.mkdir()
    (path / "Manifest.json").write_text("{}")


def _garbage_engine(path: Path, good: Path) -> None:
    from exporter.targets.tensorrt import sidecar_path

    _garbage(path, good)
    sidecar_path(path).write_text(sidecar_path(good).read_text())  # a valid sidecar: the engine itself is bad


# fmt: off
CASES = [
    Case("pytorch", _open_torch, "", "dynamic", None, None, has_metadata=False),
    Case("pytorch-cuda", _open_torch_cuda, "", "dynamic", None, None, has_metadata=False),
    Case("torchscript", _open_torchscript, "exporter.targets.torchscript.runner:TorchScriptRunner", "dynamic", None, None,
         suffix=".ts", damage=_garbage),
    Case("onnxruntime", _open_onnxruntime, "exporter.targets.onnx.runner:OnnxRuntimeRunner", str, None, None,
         suffix=".onnx", damage=_garbage),
    Case("mil-interpreter", _open_mil, "exporter.targets.coreml.mil_runner:MilRunner", "batch", (1, 64), "fp32",
         suffix=".mlpackage", damage=_empty_package),
    Case("coreml-predict", _open_coreml, "exporter.targets.coreml.runner:CoreMLRunner", "batch", (1, 64), "fp32",
         suffix=".mlpackage", damage=_empty_package),
    Case("tensorrt", _open_tensorrt, "exporter.targets.tensorrt.runner:TensorRTRunner", "batch", (2, 4), None,
         suffix=".engine", damage=_garbage_engine),
    Case("openvino", _open_openvino, "exporter.targets.openvino.runner:OpenVINORunner", "batch", None, None,
         suffix=".xml", damage=_garbage_ir),
    Case("executorch", _open_executorch, "exporter.targets.executorch.runner:ExecuTorchRunner", "batch", (1, 32), None,
         suffix=".pte", damage=_garbage),
    # made at batch 1; simple_cnn's graph lets the interpreter resize it to any batch
    Case("litert", _open_litert, "exporter.targets.litert.runner:LiteRTRunner", 1, (1, None), None,
         suffix=".tflite", damage=_garbage, fixed_batch=1),
]
ARTIFACT_OF = {"torchscript": "torchscript", "onnxruntime": "onnx", "mil-interpreter": "coreml", "coreml-predict": "coreml",
               "tensorrt": "onnx", "openvino": "openvino", "executorch": "executorch", "litert": "litert"}
# fmt: on


@dataclass
class Env:
    loaded: object
    path: Path | None
    monkeypatch: pytest.MonkeyPatch
    tmp_path: Path


MODULE_OF = {"openvino": "openvino", "executorch": "executorch", "litert": "ai-edge-litert"}


@pytest.fixture
def env_for(loaded, artifacts, tmp_path, monkeypatch):
    def make(case: Case) -> Env:
        kind = ARTIFACT_OF.get(case.id)
        if kind and kind not in artifacts:
            pytest.skip(f"no {kind} artifact here ({MODULE_OF.get(kind, 'coremltools')} not installed)")
        path = artifacts[kind] if kind else None
        if case.id == "tensorrt":
            path = _fake_engine(path, tmp_path / "m.engine", loaded.spec, *case.batch_range)
        return Env(loaded, path, monkeypatch, tmp_path)

    return make


def _reference(loaded):
    from exporter.runners.torch import TorchRunner

    return TorchRunner(loaded.module)


def _check_declared_types(runner: Runner) -> None:
    assert isinstance(runner, Runner)
    assert isinstance(runner.name, str) and runner.name
    assert isinstance(runner.input_name, str) and runner.input_name
    assert isinstance(runner.output_names, list) and runner.output_names
    assert all(isinstance(n, str) for n in runner.output_names)
    assert isinstance(runner.metadata, dict)
    assert runner.batch_dim is None or isinstance(runner.batch_dim, (str, int))
    if runner.batch_range is not None:
        low, high = runner.batch_range
        assert isinstance(low, int) and low >= 1
        assert high is None or (isinstance(high, int) and high >= low)
    assert runner.precision is None or isinstance(runner.precision, str)
    assert runner.reference_transform is None or isinstance(runner.reference_transform, str)
    assert runner.unsupported_op is None or isinstance(runner.unsupported_op, Exception)
    assert runner.requested_fixed_batch is None or isinstance(runner.requested_fixed_batch, int)


def _batches_to_try(runner: Runner) -> list[int]:
    """1 and 3; beyond a small declared maximum too (the runner must chunk), and below a minimum (pad)."""
    sizes = [1, 3]
    if runner.batch_range and runner.batch_range[1] is not None and runner.batch_range[1] <= 8:
        sizes.append(2 * runner.batch_range[1] + 1)
    return sizes


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_runner_contract(case: Case, env_for, loaded):
    from exporter.inputs import random_inputs

    env = env_for(case)
    reference = _reference(loaded)
    with case.open(env) as runner:
        _check_declared_types(runner)
        assert runner.unsupported_op is None and runner.reference_transform is None
        # the one meaning of the batch declarations (base.py); every artifact here was exported with a dynamic batch
        if case.batch_dim is str:
            assert isinstance(runner.batch_dim, str)
        else:
            assert runner.batch_dim == case.batch_dim
        assert runner.batch_range == case.batch_range
        assert runner.requested_fixed_batch == case.fixed_batch
        assert runner.precision == case.precision
        assert runner.metadata == (loaded.spec.to_dict() if case.has_metadata else {})

        for n in _batches_to_try(runner):
            batch = random_inputs(loaded.spec, n, seed=1).array
            assert batch.dtype == np.float32
            outputs = runner.infer(batch)
            assert isinstance(outputs, dict) and outputs
            assert set(outputs) <= set(runner.output_names)
            for name, value in outputs.items():
                assert isinstance(name, str)
                assert type(value) is np.ndarray, f"{name} is a {type(value).__name__}, not a NumPy array"
                assert value.shape[0] == n
            logits = next(iter(outputs.values()))
            expected = reference.infer(batch)["logits"]
            assert logits.dtype == np.float32 and logits.shape == expected.shape
            err = float(np.abs(logits.astype(np.float64) - expected).max())
            assert err <= FP32_MAX_ABS_ERR, f"{case.id} batch {n}: max abs err {err:g}"
        if case.batch_range:
            _assert_runtime_calls_inside(runner, case.batch_range)
    runner.close()  # idempotent


def _assert_runtime_calls_inside(runner: Runner, batch_range: tuple) -> None:
    """What reached the runtime stayed inside the declared range (chunked above it, padded below it)."""
    low, high = batch_range
    seen = []
    if runner.name == "tensorrt":
        seen = [n for context in runner.engine.contexts for n in context.runs]
        assert seen == [2, 3, 4, 4, 2]  # 1 padded to 2; 3; 9 as 4 + 4 + (1 padded to 2)
    elif runner.name == "coreml-predict":
        seen = runner.model.calls
    if seen:
        assert all(low <= n <= (high or n) for n in seen), seen


@pytest.mark.parametrize("case", [c for c in CASES if c.suffix], ids=[c.id for c in CASES if c.suffix])
def test_open_runner_picks_the_runner_and_errors_are_typed(case: Case, env_for, tmp_path):
    env = env_for(case)
    case.open(env).close()  # installs the fakes this case needs (Darwin + MLModel, tensorrt) for open_runner
    module, cls = case.cls.split(":")
    with open_runner(env.path) as runner:
        assert type(runner) is getattr(importlib.import_module(module), cls)
        assert runner.metadata == env.loaded.spec.to_dict()
    with pytest.raises(BadInputError, match="does not exist"):
        open_runner(tmp_path / f"missing{case.suffix}")
    damaged = tmp_path / f"damaged{case.suffix}"
    case.damage(damaged, env.path)
    with pytest.raises(BadInputError):  # each runtime's own exception becomes a sentence, never a crash
        case.open(Env(env.loaded, damaged, env.monkeypatch, tmp_path))


# ----------------------------------------------------------------- the declarations themselves


# the registered Format each case stands for (the pytorch cases are the reference, not a Format)
# fmt: off
FORMAT_OF = {"torchscript": "torchscript", "onnxruntime": "onnx", "mil-interpreter": "coreml", "coreml-predict": "coreml",
             "tensorrt": "tensorrt", "openvino": "openvino", "executorch": "executorch", "litert": "litert"}
# fmt: on


def test_every_registered_format_has_a_contract_case():
    """A Format registered anywhere (exporter/runners, a target folder) is held to the contract here."""
    from exporter import kinds

    assert set(FORMAT_OF) <= {c.id for c in CASES}
    assert {f.name for f in kinds.formats()} <= set(FORMAT_OF.values())


def _runner_modules() -> list[str]:
    """exporter.runners' modules, every target folder's runner modules, and every registered Format's runner module."""
    import exporter.targets
    from exporter import kinds

    names = [f"exporter.runners.{info.name}" for info in pkgutil.iter_modules(exporter.runners.__path__)]
    for folder in pkgutil.iter_modules(exporter.targets.__path__):
        path = [str(Path(exporter.targets.__path__[0]) / folder.name)]
        names += [f"exporter.targets.{folder.name}.{m.name}" for m in pkgutil.iter_modules(path) if "runner" in m.name]
    return names + sorted({f.runner.partition(":")[0] for f in kinds.formats()} - set(names))


def _runner_classes() -> list[type]:
    """Every class defined in a runner module (exporter.runners, a target's folder) that runs something (has infer)."""
    found = []
    for name in _runner_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "infer") and not cls.__name__.startswith("_"):
                found.append(cls)
    return found


def test_every_runner_class_is_a_runner_and_sets_its_name():
    classes = _runner_classes()
    names = {cls.__name__ for cls in classes}
    assert {
        "Runner",
        "TorchRunner",
        "TorchScriptRunner",
        "OnnxRuntimeRunner",
        "MilRunner",
        "CoreMLRunner",
        "TensorRTRunner",
        "ExecuTorchRunner",
        "LiteRTRunner",
    } <= names
    runners = [cls for cls in classes if cls is not Runner]
    for cls in runners:
        assert issubclass(cls, Runner), f"{cls.__name__} does not subclass Runner"
        assert "name" in vars(cls) and isinstance(cls.name, str) and cls.name, f"{cls.__name__} does not set name"
    assert len({cls.name for cls in runners}) == len(runners)


def test_the_base_class_declares_every_attribute_with_type_default_and_docstring():
    hints = typing.get_type_hints(Runner)
    assert set(CONTRACT_ATTRIBUTES) <= set(hints)
    source = inspect.getsource(Runner)
    for attribute in CONTRACT_ATTRIBUTES:
        # a docstring right below each declaration
        declaration = source.split(f"    {attribute}:", 1)[1]
        assert declaration.split("\n", 1)[1].lstrip().startswith('"""'), attribute
    plain = Runner()
    assert (plain.output_names, plain.metadata) == ([], {})
    assert plain.batch_dim is None and plain.batch_range is None and plain.precision is None
    assert plain.unsupported_op is None and plain.requested_fixed_batch is None and plain.reference_transform is None
    with plain as same:
        assert same is plain
    with pytest.raises(NotImplementedError):
        plain.infer(np.zeros((1, 3, 4, 4), np.float32))


def test_verify_takes_a_duck_typed_runner_with_the_contract_defaults():
    from exporter.runners.base import as_runner

    class Duck:
        batch_dim = 1

        def infer(self, x):
            return {"y": x * 2}

    duck = Duck()
    view = as_runner(duck)
    assert isinstance(view, Runner) and view.batch_dim == 1 and view.requested_fixed_batch is None and view.metadata == {}
    assert view.infer(np.ones((2, 3), np.float32))["y"].tolist() == [[2.0] * 3] * 2
    runner = Runner()
    assert as_runner(runner) is runner


def test_importing_the_package_loads_no_runtime():
    import subprocess

    code = (
        "import sys, exporter.runners, exporter.runners.base; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'coremltools', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1]
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("value,threads", [("1", 1), ("3", 3), ("", None), ("0", None), ("many", None)])
def test_cnnexport_threads_sets_the_runtimes_thread_count(exported_onnx, monkeypatch, value, threads):
    """CNNEXPORT_THREADS is what a runner computes with when its caller names no thread count (tests/conftest.py sets 1)."""
    from exporter.runners.base import default_threads
    from exporter.targets.onnx.runner import OnnxRuntimeRunner

    monkeypatch.setenv("CNNEXPORT_THREADS", value)
    assert default_threads() == threads
    options = OnnxRuntimeRunner(exported_onnx).session.get_session_options()
    assert options.intra_op_num_threads == (threads or 0)  # 0: onnxruntime's own choice
    assert OnnxRuntimeRunner(exported_onnx, threads=2).session.get_session_options().intra_op_num_threads == 2
