"""Property tests of every parser of user strings: a valid value or BadInputError, never anything else."""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter.errors import BadInputError
from exporter.spec import ModelSpec, parse_batch_sizes, parse_floats, parse_input_shape, stored_spec

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text that looks like what people type into these options, plus anything at all
NUMBERISH = st.text(alphabet="0123456789.,-+eE xX_ naifINF\t;:", max_size=30)
ANY_TEXT = st.text(max_size=40)
USER_TEXT = st.one_of(NUMBERISH, ANY_TEXT)


def _valid_or_bad_input(fn, *args):
    try:
        return fn(*args)
    except BadInputError as exc:
        # one sentence; several problems are listed under it, one per line ("  - where: what")
        first, *listed = str(exc).splitlines()
        assert first and all(line.startswith("  - ") and line[4:].strip() for line in listed), str(exc)
        return None


@SETTINGS
@given(USER_TEXT)
@example("nan,0.5")
@example("1e999")
@example("٣,٤")  # Arabic-Indic digits: float() accepts them
def test_parse_floats(text):
    values = _valid_or_bad_input(parse_floats, text, "--mean")
    if values is not None:
        assert isinstance(values, tuple) and values
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)


@SETTINGS
@given(USER_TEXT)
@example("3x224x224")
@example("3,-1,5")
@example("3,99999999999999999999,2")
def test_parse_input_shape(text):
    dims = _valid_or_bad_input(parse_input_shape, text)
    if dims is not None:
        assert len(dims) == 3 and all(isinstance(d, int) and d >= 1 for d in dims)


@SETTINGS
@given(USER_TEXT)
@example("1,4")
@example("0")
def test_parse_batch_sizes(text):
    sizes = _valid_or_bad_input(parse_batch_sizes, text)
    if sizes is not None:
        assert sizes and all(isinstance(b, int) and b >= 1 for b in sizes)


@SETTINGS
@given(shape=USER_TEXT, mean=USER_TEXT, std=USER_TEXT)
def test_input_spec_from_command_line_strings(shape, mean, std):
    """What --input-shape/--mean/--std together become: a valid ModelSpec or BadInputError."""

    def build():
        return ModelSpec("x", 10).with_overrides(
            input_shape=parse_input_shape(shape), mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std")
        )

    spec = _valid_or_bad_input(build)
    if spec is not None:
        assert all(math.isfinite(v) for v in spec.channel_mean() + spec.channel_std())
        assert min(spec.channel_std()) > 0 and len(spec.channel_mean()) == spec.channels


@SETTINGS
@given(
    st.one_of(
        ANY_TEXT,
        st.builds(lambda d: __import__("json").dumps(d), st.dictionaries(ANY_TEXT, st.integers() | ANY_TEXT, max_size=4)),
    )
)
def test_stored_spec_of_an_artifact(text):
    """The cnnexport.spec metadata of a (possibly damaged) artifact: exactly its JSON object, or an error naming it."""
    import json

    try:
        value = stored_spec(text, "m.onnx")
    except BadInputError as exc:
        assert "m.onnx" in str(exc) and "cnnexport.spec" in str(exc), str(exc)  # names the file and the entry
        try:
            parsed = json.loads(text)
        except ValueError:
            return
        assert not isinstance(parsed, dict), f"a JSON object was refused: {text!r}"
        return
    assert value == (json.loads(text) if text else {})  # what was stored comes back unchanged
    spec = _valid_or_bad_input(ModelSpec.from_dict, value)
    if spec is not None:  # a spec that reads round-trips through what an artifact stores
        assert ModelSpec.from_dict(stored_spec(spec.to_json(), "m.onnx")) == spec


@st.composite
def specs(draw):
    channels, classes = draw(st.sampled_from([1, 3, 4])), draw(st.integers(1, 6))
    finite = st.floats(-10, 10, allow_nan=False)
    labels = draw(st.none() | st.lists(st.text(max_size=8), min_size=classes, max_size=classes).map(tuple))
    return ModelSpec(
        draw(st.text(min_size=1, max_size=12)),
        classes,
        channels,
        draw(st.integers(1, 512)),
        draw(st.integers(1, 512)),
        tuple(draw(finite) for _ in range(channels)),
        tuple(draw(st.floats(0.01, 10)) for _ in range(channels)),
        labels=labels,
    )


@SETTINGS
@given(specs())
def test_a_spec_round_trips_through_artifact_metadata(spec):
    assert ModelSpec.from_dict(stored_spec(spec.to_json(), "m.onnx")) == spec


# --------------------------------------------------------------------------- recipe --set

KEYS = [
    "name",
    "description",
    "model.arch",
    "model.input_shape",
    "model.mean",
    "model.arch_kwargs",
    "verify.batch_sizes",
    "verify.seed",
    "verify.fp32.max_rel_err",
    "calibration.samples",
    "calibration.data",
    "stages.onnx.opset",
    "stages.onnx.exporter",
    "stages.onnx.enabled",
    "stages.int8.method",
    "stages.int8.exclude",
    "stages.fp16.overflow",
    "stages.coreml.precision",
    "outputs.name",
    "stages",
    "model",
    "verify",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "1",
            "0",
            "-3",
            "true",
            "maybe",
            "[1, 4]",
            "[0]",
            "{a: 1}",
            "null",
            "",
            "fp32",
            "entropy",
            "../x",
            "&a [*a]",
            "!!python/object/apply:os.system ['true']",
            "[",
            "{",
            "1e999",
            ".nan",
            "'quoted'",
            "a: b: c",
        ]
    ),
    ANY_TEXT,
)
ASSIGNMENTS = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | st.text(alphabet=string.ascii_lowercase + "._", max_size=20), VALUES
    ),
    ANY_TEXT,
)


@SETTINGS
@given(st.lists(ASSIGNMENTS, max_size=3))
@example(["stages=&a [*a]"])
@example(["model.arch.x=1"])
@example(["name.x=1"])
@example([".=1"])
def test_recipe_set_overrides(assignments):
    from exporter import recipe

    result = _valid_or_bad_input(recipe.load, "demo", assignments)
    if result is not None:
        assert isinstance(result, recipe.Recipe)
        assert min(result.verify.batch_sizes) >= 1
        assert result.outputs.name is None or "/" not in result.outputs.name


# --------------------------------------------------------------------------- calibration cache

TENSOR_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip())
SCALES = st.floats(min_value=2.0**-100, max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32)


@SETTINGS
@given(st.dictionaries(TENSOR_NAMES, SCALES, max_size=8), st.from_regex(r"1[0-2]\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True))
def test_calibration_cache_round_trip(scales, version):
    from exporter.targets.tensorrt.calibration_cache import calibration_cache_text, parse_calibration_cache
    from exporter.targets.tensorrt.version import version_code as trt_version_code

    header, parsed = parse_calibration_cache(calibration_cache_text(scales, version))
    assert header == f"TRT-{trt_version_code(version)}-EntropyCalibration2"
    assert parsed == scales  # float32 values survive the big-endian hex exactly


@SETTINGS
@given(st.one_of(ANY_TEXT, st.builds(lambda body: "TRT-100800-EntropyCalibration2\n" + body, ANY_TEXT)))
@example("TRT-100800-EntropyCalibration2\ninput: zz")
@example("TRT-100800-EntropyCalibration2\ninput: 3f80")
@example("TRT-100800-EntropyCalibration2\nno separator")
def test_parse_calibration_cache_of_any_text(text):
    from exporter.targets.tensorrt.calibration_cache import parse_calibration_cache

    result = _valid_or_bad_input(parse_calibration_cache, text)
    if result is not None:
        header, scales = result
        assert header.startswith("TRT-") and all(isinstance(v, float) for v in scales.values())


# --------------------------------------------------------------------------- TensorRT --batch


@SETTINGS
@given(
    st.one_of(st.builds(lambda a, b, c: f"{a}:{b}:{c}", st.integers(-2, 64), st.integers(-2, 64), st.integers(-2, 64)), USER_TEXT)
)
@example("1:8:32")
@example("8:4:2")
def test_tensorrt_batch_profile(text):
    trt = pytest.importorskip("exporter.targets.tensorrt")
    if not hasattr(trt, "parse_batch_profile"):
        pytest.skip("the TensorRT stage has no --batch parser")
    profile = _valid_or_bad_input(trt.parse_batch_profile, text)
    if profile is not None:
        assert 1 <= profile.min <= profile.opt <= profile.max
