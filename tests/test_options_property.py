"""Every verb's flags, property-based: any out-of-range value is exit 2, names its flag, and writes nothing.

The flags and their ranges are read from the commands themselves (their signatures, the
options models' constraints, Typer's min/max, a Literal's choices): a flag added without a
range shows up here as a verb that accepted an impossible value.
"""

from __future__ import annotations

import inspect
import typing
from enum import Enum
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import options as o
from exporter.targets.coreml.row import CoreMLOptions
from exporter.targets.onnx.row import Fp16Options, Int8Options, OnnxOptions, QuantizeChoice, opset_range
from exporter.targets.openvino.row import OpenVINOOptions
from exporter.targets.tensorrt.row import TensorRTOptions
from exporter.targets.torchscript.row import TorchScriptOptions
from tests.conftest import files_in

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

MODELS = (
    TorchScriptOptions,
    OnnxOptions,
    Int8Options,
    Fp16Options,
    QuantizeChoice,
    CoreMLOptions,
    TensorRTOptions,
    OpenVINOOptions,
    o.DataOptions,
    o.ToleranceOverrides,
    o.DetectOptions,
)


def _command(name: str):
    from exporter.cli import app

    return typer.main.get_command(app).commands[name]


def _annotations(command) -> dict:
    """Each parameter's annotation, resolved (the check verbs' modules use postponed annotations)."""
    callback = command.callback
    signature = inspect.signature(callback)
    try:
        hints = typing.get_type_hints(callback, include_extras=True)
    except Exception:  # noqa: BLE001 - a generated signature carries real objects already
        hints = {}
    return {name: hints.get(name, p.annotation) for name, p in signature.parameters.items()}


def _bare(annotation):
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else annotation
    return annotation


def _model_bounds(name: str) -> tuple[float | None, float | None, bool]:
    """(low, high, low is exclusive) of the options-model field a flag was generated from."""
    for model in MODELS:
        field = model.model_fields.get({"calib": "data"}.get(name, name))
        if field is None:
            continue
        low = high = None
        exclusive = False
        for m in field.metadata:
            if getattr(m, "ge", None) is not None:
                low = m.ge
            if getattr(m, "gt", None) is not None:
                low, exclusive = m.gt, True
            if getattr(m, "le", None) is not None:
                high = m.le
        return low, high, exclusive
    return None, None, False


def numeric_flags(verb: str) -> list[tuple[str, str, type, float | None, float | None, bool]]:
    """(parameter, flag, int|float, low, high, low exclusive) for every numeric flag of a verb that has a range."""
    command = _command(verb)
    by_name = {p.name: p for p in command.params}
    out = []
    for name, annotation in _annotations(command).items():
        kind = _bare(annotation)
        if kind not in (int, float) or name == "opset":
            continue
        option = by_name[name]
        low, high, exclusive = _model_bounds(name)
        low = getattr(option, "min", None) if low is None else low
        high = getattr(option, "max", None) if high is None else high
        out.append((name, option.opts[0], kind, low, high, exclusive))
    return out


def choice_flags(verb: str) -> list[tuple[str, list[str]]]:
    command = _command(verb)
    out = []
    for name, annotation in _annotations(command).items():
        kind = _bare(annotation)
        if isinstance(kind, type) and issubclass(kind, Enum):
            flag = next(p for p in command.params if p.name == name).opts[0]
            out.append((flag, [e.value for e in kind]))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, simple_cnn_ckpt, exported_onnx):
    """Real inputs (a checkpoint, its ONNX, calibration arrays) and an output folder that must stay empty."""
    import shutil

    root = tmp_path_factory.mktemp("options")
    inputs = root / "in"
    inputs.mkdir()
    ckpt = Path(shutil.copy(simple_cnn_ckpt, inputs / "m.pt"))
    onnx_path = Path(shutil.copy(exported_onnx, inputs / "m.onnx"))
    npy = inputs / "calib.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    out = root / "out"
    out.mkdir()
    base = {
        "onnx": [ckpt, "--arch", "simple_cnn", "-o", out / "m.onnx"],
        "torchscript": [ckpt, "--arch", "simple_cnn", "-o", out / "m.ts"],
        "coreml": [ckpt, "--arch", "simple_cnn", "-o", out / "m.mlpackage"],
        "simplify": [onnx_path, "-o", out / "m.sim.onnx"],
        "quantize": [onnx_path, "--calib", npy, "-o", out / "m.int8.onnx"],
        "tensorrt": [onnx_path, "--emit-script", out / "kit", "-o", out / "m.engine"],
        "openvino": [onnx_path, "-o", out / "m.xml"],
        "verify": [onnx_path, "--checkpoint", ckpt, "--arch", "simple_cnn"],
        "bench": [onnx_path],
        "eval": [onnx_path, "--data", "digits"],
        "debug": [onnx_path, "--checkpoint", ckpt, "--arch", "simple_cnn"],
        "run": [ckpt, "--recipe", "release", "-o", out / "run", "--set", "model.arch=simple_cnn"],
        "demo": ["-o", out / "demo"],
    }
    return root, base


VERBS = (
    "onnx",
    "torchscript",
    "coreml",
    "simplify",
    "quantize",
    "tensorrt",
    "openvino",
    "verify",
    "bench",
    "eval",
    "debug",
    "run",
    "demo",
)


def _refused_naming(cli, world, verb: str, flag: str, value, *extra) -> None:
    root, base = world
    before = files_in(root)
    r = cli(verb, *base[verb], *extra, flag, value)
    text = r.stdout + r.stderr
    assert r.exit_code == 2, (verb, flag, value, r)
    assert flag in text, (verb, flag, value, text[-600:])
    assert "Traceback" not in text and r.exception is None or isinstance(r.exception, SystemExit), text[-600:]
    assert files_in(root) == before, (verb, flag, value, sorted(files_in(root) - before))


def _outside(kind, low, high, exclusive):
    """Values outside [low, high] (the low bound itself when it is exclusive)."""
    parts = []
    if low is not None:
        if kind is int:
            parts.append(st.integers(max_value=int(low) - (0 if exclusive else 1), min_value=-(10**9)))
        else:
            below = st.floats(max_value=low, exclude_max=not exclusive, min_value=-1e12, allow_nan=False)
            parts.append(below)
    if high is not None:
        parts.append(
            st.integers(min_value=int(high) + 1, max_value=10**9)
            if kind is int
            else st.floats(min_value=high, exclude_min=True, max_value=1e12, allow_nan=False)
        )
    return st.one_of(*parts) if parts else None


def test_every_numeric_flag_declares_a_range():
    """A count, a threshold or a size with no range is a flag that accepts nonsense."""
    missing = [(verb, flag) for verb in VERBS for _, flag, _, low, high, _ in numeric_flags(verb) if low is None and high is None]
    assert missing == [], missing


CASES = [(verb, name, flag, kind, low, high, ex) for verb in VERBS for name, flag, kind, low, high, ex in numeric_flags(verb)]


@pytest.mark.parametrize("verb,name,flag,kind,low,high,exclusive", CASES, ids=[f"{c[0]}{c[2]}" for c in CASES])
def test_an_out_of_range_number_is_exit_2_naming_the_flag(cli, world, verb, name, flag, kind, low, high, exclusive):
    strategy = _outside(kind, low, high, exclusive)

    @SETTINGS
    @given(strategy)
    def check(value):
        _refused_naming(cli, world, verb, flag, value)

    check()


CHOICES = [(verb, flag, values) for verb in VERBS for flag, values in choice_flags(verb)]


@pytest.mark.parametrize("verb,flag,values", CHOICES, ids=[f"{c[0]}{c[1]}" for c in CHOICES])
def test_a_word_outside_a_choice_is_exit_2_naming_the_flag(cli, world, verb, flag, values):
    @settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12).filter(lambda v: v not in values))
    def check(value):
        _refused_naming(cli, world, verb, flag, value)

    check()


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_an_opset_outside_the_installed_exporter_is_exit_2(cli, world, exporter):
    low, high = opset_range(exporter)

    @SETTINGS
    @given(st.one_of(st.integers(min_value=-100, max_value=low - 1), st.integers(min_value=high + 1, max_value=10**6)))
    def check(value):
        _refused_naming(cli, world, "onnx", "--opset", value, "--exporter", exporter)

    check()
