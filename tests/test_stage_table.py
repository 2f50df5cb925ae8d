"""The table of artifact kinds is the one source: the CLI, recipes and `run` must agree with it.

Each test here fails when a kind, an option, a choice or a default differs between the
options models (exporter/options.py), the verbs' flags, the recipe schema and `run`'s plan.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional, get_args

import pytest
from pydantic import BaseModel

from exporter import kinds, options
from exporter.options import default_of, flag_of
from exporter.targets.onnx.row import quantize_row

EXPORTER = Path(__file__).resolve().parents[1] / "exporter"


def _cli():
    import typer

    from exporter.cli import app

    return typer.main.get_command(app)


def _flags(command) -> dict:
    """{option name: click parameter} of one verb."""
    return {p.name: p for p in command.params}


def _choices(param) -> list[str]:
    return [m.value for m in param.type_descriptor.annotation]


def _click_default(param):
    default = param.default
    return default.value if hasattr(default, "value") else default


@pytest.mark.parametrize("row", kinds.KINDS, ids=lambda r: r.name)
def test_every_option_of_a_kind_is_a_flag_of_its_verb_with_the_same_spelling_choices_and_default(row):
    verb = _cli().commands[row.verb]
    flags = _flags(verb)
    for name, field in row.options.model_fields.items():
        assert name in flags, f"{row.verb} has no flag for {row.options.__name__}.{name}"
        param = flags[name]
        declared = flag_of(row.options, name).split("/")
        assert declared[0] in param.opts, (name, param.opts)
        if len(declared) > 1:
            assert declared[1] in param.secondary_opts, (name, param.secondary_opts)
        default = default_of(row.options, name)
        if isinstance(default, list):
            assert param.multiple and param.default in (None, ()), name  # repeatable; none given = the model's []
        else:
            assert _click_default(param) == default, (row.verb, name, _click_default(param), default)
        literal = [a for a in (field.annotation, *get_args(field.annotation)) if getattr(a, "__origin__", None) is Literal]
        if literal:
            assert _choices(param) == [str(v) for v in get_args(literal[0])], name
        assert param.help == field.description, name


@pytest.mark.parametrize("row", kinds.KINDS, ids=lambda r: r.name)
def test_every_option_of_a_kind_is_a_key_of_its_recipe_stage_with_the_same_default(row):
    from exporter.recipe import Recipe

    section = Recipe().stages.__class__.model_fields[row.name].annotation
    recipe_fields = section.model_fields
    assert recipe_fields["enabled"].default is row.recipe_enabled
    for name in row.options.model_fields:
        assert name in recipe_fields, f"recipe stages.{row.name} lacks {name}"
        expected = row.recipe_fields[name][1] if name in row.recipe_fields else default_of(row.options, name)
        assert default_of(section, name) == expected, (row.name, name)
    extra = set(recipe_fields) - set(row.options.model_fields) - {"enabled"}
    assert extra == set(), f"recipe stages.{row.name} has keys its options model lacks: {extra}"


def test_recipe_stages_are_exactly_the_table_rows_in_its_order():
    from exporter.recipe import Recipe

    assert list(Recipe().stages.__class__.model_fields) == [r.name for r in kinds.KINDS]


def test_no_if_chain_over_kind_names_is_left_where_the_rows_decide():
    """Runners, bench and the recipe's bench read the rows' Formats; a `kind == "onnx"` branch would bypass them."""
    chained = {}
    for module in ("runners/__init__.py", "measure/bench.py", "measure/recommend.py", "report.py"):
        found = re.findall(r'kind\s*(?:==|in)\s*\(?"(\w+)"', (EXPORTER / module).read_text())
        found = [k for k in found if k != "pytorch"]  # the eager baseline is not an artifact kind
        if found:
            chained[module] = found
    assert chained == {}


def test_every_verb_that_builds_a_kind_exists_and_every_row_resolves():
    commands = _cli().commands
    names, suffixes = set(), set()
    for row in kinds.KINDS:
        assert row.verb in commands, row.verb
        assert callable(row.builder()) and (not row.stage or callable(row.stage_function())), row.name
        assert row.source in ("checkpoint", "onnx")
        fmt = row.format
        assert row.runner == fmt.name and fmt in kinds.formats()
        assert callable(kinds.resolve(fmt.runner)), f"{row.name}: its Format's runner {fmt.runner} does not resolve"
        assert not fmt.detect or callable(kinds.resolve(fmt.detect))
        assert fmt.suffixes or fmt.detect, f"{fmt.name}: nothing recognises its files"
        assert all(n in kinds.BY_NAME for n in row.needs), row.needs
        assert row.name not in names and row.suffix not in suffixes
        names.add(row.name)
        suffixes.add(row.suffix)
        assert row.precision(row.options()) in ("fp32", "fp16", "int8")


def test_quantize_flags_pick_the_rows_of_the_table():
    assert quantize_row("int8", "cpu").name == "int8"
    assert quantize_row("int8", "tensorrt").name == "int8_tensorrt"
    assert quantize_row("fp16", "cpu").name == "fp16"
    flags = _flags(_cli().commands["quantize"])
    assert _choices(flags["precision"]) == ["int8", "fp16"] and flags["precision"].default.value == "int8"


def test_shared_verification_and_calibration_defaults_match_the_recipe_sections():
    from exporter.recipe import DataOptions, VerifySection

    verify = VerifySection()
    verbs = sorted({row.verb for row in kinds.KINDS})
    sized = [verb for verb in verbs if "batch_sizes" in _flags(_cli().commands[verb])]
    # every verb verifies at chosen batch sizes, except tensorrt: its profile's min and max are the sizes
    assert set(verbs) - set(sized) == {kinds.BY_NAME["tensorrt"].verb}, sized
    for verb in verbs:
        flags = _flags(_cli().commands[verb])
        if verb in sized:
            assert [int(b) for b in flags["batch_sizes"].default.split(",")] == verify.batch_sizes, verb
        assert flags["seed"].default == verify.seed, verb
    calibrating = sorted({row.verb for row in kinds.KINDS if row.reads_data})
    assert calibrating, "no row reads calibration data"
    for verb in calibrating:
        flags = _flags(_cli().commands[verb])
        assert flags["samples"].default == DataOptions().samples and flags["holdout"].default == DataOptions().holdout
        assert "--calib" in flags["calib"].opts


def test_run_plan_follows_the_table():
    from exporter import recipe
    from exporter.run import plan

    everything = recipe.validate({"stages": {r.name: {"enabled": True} for r in kinds.KINDS}})
    planned = plan(everything)
    assert [s.spec.name for s in planned] == [r.name for r in kinds.KINDS]
    upstream = {s.spec.name: s.upstream for s in planned}
    assert upstream["onnx"] is None and upstream["simplify"] == "onnx" and upstream["int8"] == "simplify"
    assert upstream["tensorrt"] == "simplify" and upstream["coreml"] is None


def test_a_bad_option_value_names_the_flag_on_the_cli_and_the_key_in_a_recipe():
    from exporter.errors import BadInputError

    row = kinds.get("onnx")
    with pytest.raises(BadInputError, match=r"^--exporter: "):
        row.parse({"exporter": "nope"}, cli=True)
    with pytest.raises(BadInputError, match=r"^stages\.onnx: exporter: "):
        row.parse({"exporter": "nope"})


class _Toy(options.Strict):
    mode: Literal["a", "b"] = options.opt("b", "Mode.")
    fast: bool = options.opt(True, "Fast.", flag="--fast/--slow")
    names: list[str] = options.opt([], "Names.")
    level: Optional[int] = options.opt(None, "Level.", flag="--lvl")


def test_the_flag_generator_turns_each_field_into_one_typed_flag(tmp_path):
    """What adding a field to an options model does to its verb: a flag with its type, choices, default, help."""
    import typer
    from typer.testing import CliRunner

    from exporter.cli.params import command, stage_params, values_for

    app = typer.Typer()
    seen = {}
    command(app, "toy", stage_params(_Toy), "Toy verb.")(lambda a: seen.update(_Toy(**values_for(_Toy, a)).model_dump()))
    command(app, "other", [], "Another verb (Typer needs two to keep names).")(lambda a: None)
    runner = CliRunner()
    assert runner.invoke(app, ["toy"]).exit_code == 0 and seen == {"mode": "b", "fast": True, "names": [], "level": None}
    r = runner.invoke(app, ["toy", "--mode", "a", "--slow", "--names", "x", "--names", "y", "--lvl", "3"])
    assert r.exit_code == 0, r.output
    assert seen == {"mode": "a", "fast": False, "names": ["x", "y"], "level": 3}
    bad = runner.invoke(app, ["toy", "--mode", "c"])
    assert bad.exit_code == 2 and "'c' is not one of" in bad.output
    assert "Mode." in runner.invoke(app, ["toy", "--help"]).output


# ----------------------------------------------------------------- the house rules the table made possible


def test_no_module_of_the_library_is_over_450_lines():
    too_long = {
        str(p.relative_to(EXPORTER)): n
        for p in EXPORTER.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450 and p.name != "ops.py"
    }  # the MIL op table aside
    assert too_long == {}


def test_the_default_tensorrt_version_is_written_once():
    from exporter.targets.tensorrt.version import DEFAULT_VERSION

    spelled = [str(p.relative_to(EXPORTER)) for p in EXPORTER.rglob("*.py") if DEFAULT_VERSION in p.read_text()]
    assert spelled == ["targets/tensorrt/version.py"]


def test_nothing_is_monkeypatched_onto_an_object_in_the_library():
    patched = [
        str(p.relative_to(EXPORTER)) for p in EXPORTER.rglob("*.py") if re.search(r"type:\s*ignore\[method-assign", p.read_text())
    ]
    assert patched == []


def test_tensorrt_lives_in_one_package():
    outside = [
        str(p.relative_to(EXPORTER))
        for p in EXPORTER.rglob("*.py")
        if "tensorrt" not in p.parts and re.search(r"^import tensorrt|^\s+import tensorrt", p.read_text(), re.M)
    ]
    assert outside == [], outside
    assert not list(EXPORTER.glob("*trt*.py")) and not (EXPORTER / "stages" / "tensorrt.py").exists()


def test_options_models_are_strict():
    for row in kinds.KINDS:
        assert issubclass(row.options, BaseModel) and row.options.model_config.get("extra") == "forbid", row.name


def test_the_python_build_call_does_what_the_verb_does(tmp_path, lenet5_ckpt):
    """build('fp16', CHECKPOINT) exports and verifies the ONNX first, then the fp16 model, each installed with its report."""
    import shutil

    from exporter.build import build
    from exporter.errors import BadInputError

    ckpt = tmp_path / "lenet5.pt"
    shutil.copy(lenet5_ckpt, ckpt)
    with pytest.raises(BadInputError, match="needs calibration data"):
        build("int8", ckpt)  # refused before any work: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.pt"]
    made = build("fp16", ckpt, {"overflow": "fail"})
    assert [(r.kind, r.path.name, r.verification.status) for r in made] == [
        ("onnx", "lenet5.onnx", "pass"),
        ("fp16", "lenet5.fp16.onnx", "pass"),
    ]
    assert made[1].verification.precision == "fp16" and made[0].verification.precision == "fp32"
    assert (tmp_path / "lenet5.fp16.onnx.report.json").is_file() and (tmp_path / "lenet5.onnx.report.json").is_file()
