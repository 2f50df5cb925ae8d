"""A target is one row: a toy target written outside the package, from the files docs/architecture.md lists alone.

The toy package brings its options model, its stage (what makes a `.toy` file), its runner (a
fake runtime: onnxruntime under another name, so the file is nothing our own formats claim) and
its row, registered through the ``cnnexport.targets`` entry point. Nothing in exporter/ knows it;
the verb list, the recipe schema, `run`, `bench`, `verify`, artifact detection and the report
must all see it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import plugin_site
from tests.verdicts import verified

REPO = Path(__file__).resolve().parents[1]

TOY = '''
"""A toy cnnexport target: an ONNX graph in a .toy file, run by a 'toy runtime'."""
from pathlib import Path
from typing import Literal

from exporter import kinds
from exporter.options import Strict, opt
from exporter.targets.onnx.runner import OnnxRuntimeRunner
from exporter.stages import StageOutput, StageRequest


class ToyOptions(Strict):
    flavour: Literal["plain", "salted"] = opt("plain", "How the toy artifact is made.")


def make(req: StageRequest) -> StageOutput:
    from exporter.targets.onnx.stage import export as onnx_export

    made = onnx_export(req.loaded, req.staging, req.name, exporter="legacy")
    return StageOutput(made.files, {"flavour": req.options.flavour})


class ToyRunner(OnnxRuntimeRunner):
    """The fake runtime."""


def open_artifact(path, threads=None, device="cpu"):
    return ToyRunner(path, threads=threads)


TOY_FORMAT = kinds.Format("toy", "toy_target:open_artifact", (".toy",), describe=".toy")
ROW = kinds.ArtifactKind(
    name="toy", kind="toy", verb="toy", suffix=".toy", source="checkpoint", options=ToyOptions,
    stage="toy_target:make", build="exporter.build:from_checkpoint", format=TOY_FORMAT,
    precision=lambda _options: "fp32", traces=True, packages=("onnxruntime",),
    help="Make a toy artifact, then verify it against the checkpoint.",
)
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> dict:
    """A folder on PYTHONPATH holding the toy package and the dist-info that declares its entry point."""
    return plugin_site(tmp_path_factory.mktemp("plugin_site"), "toy_target", TOY, "[cnnexport.targets]\ntoy = toy_target:ROW\n")


def cnnexport(env: dict, cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_toy_target_is_a_verb_a_recipe_section_and_a_detected_format(plugin, tmp_path):
    help_text = cnnexport(plugin, tmp_path, "--help").stdout
    assert "toy" in help_text and "Make a toy artifact" in help_text
    verb = cnnexport(plugin, tmp_path, "toy", "--help").stdout
    assert "--flavour" in verb and "--calib" not in verb  # its options model, the shared flags
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
        import json
        from exporter.recipe import Recipe
        from exporter.runners import detect_kind
        from exporter.measure.bench import artifact_globs
        schema = Recipe.model_json_schema()
        print(json.dumps({"stages": list(Recipe().stages.__class__.model_fields), "kind": detect_kind("m.toy"),
                          "globs": artifact_globs(), "schema": json.dumps(schema)}))
        """),
        ],
        env=plugin,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = json.loads(probe.stdout)
    assert found["stages"][-1] == "toy" and found["kind"] == "toy" and "*.toy" in found["globs"]
    assert "flavour" in found["schema"] and "salted" in found["schema"]
    # without the plug-in, none of it exists
    bare = {k: v for k, v in plugin.items() if k != "PYTHONPATH"}
    assert "toy" not in cnnexport({**bare, "PYTHONPATH": str(REPO)}, tmp_path, "--help").stdout.split()


def test_the_toy_target_builds_verifies_benches_and_runs_in_a_recipe(plugin, simple_cnn_ckpt, tmp_path):
    made = cnnexport(
        plugin, tmp_path, "toy", simple_cnn_ckpt, "--arch", "simple_cnn", "--flavour", "salted", "-o", tmp_path / "m.toy",
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    art = json.loads(made.stdout)["artifacts"][-1]
    assert art["kind"] == "toy" and verified(art["verification"]) and art["details"]["flavour"] == "salted"
    report = json.loads((tmp_path / "m.toy.report.json").read_text())
    assert "onnxruntime" in report["versions"]

    check = cnnexport(
        plugin, tmp_path, "verify", tmp_path / "m.toy", "--checkpoint", simple_cnn_ckpt, "--arch", "simple_cnn", "--json"
    )
    assert check.returncode == 0, check.stderr
    assert verified(json.loads(check.stdout)["artifacts"][-1]["verification"])

    bench = cnnexport(plugin, tmp_path, "bench", tmp_path / "m.toy", "--batch", "1", "--seconds", "0.2", "--json")
    assert bench.returncode == 0, bench.stderr
    rows = json.loads(bench.stdout)["rows"]
    assert [r["status"] for r in rows if r["target"] == "m.toy"] == ["ok"] and rows[0]["images_per_s"] > 0

    recipe = tmp_path / "toy.yaml"
    recipe.write_text(
        "name: toy\nmodel: {arch: simple_cnn}\nstages:\n  onnx: {enabled: false}\n  toy: {enabled: true, flavour: salted}\n"
        "bench: {enabled: true, batch_sizes: [1], seconds: 0.2, runtimes: [onnxruntime]}\n"
    )
    run = cnnexport(plugin, tmp_path, "run", "--recipe", recipe, simple_cnn_ckpt, "-o", tmp_path / "out", "--json")
    assert run.returncode == 0, run.stderr
    stages = json.loads(run.stdout)["manifest"]["stages"]
    assert stages["toy"]["status"] == "pass" and "onnx" not in stages, stages  # disabled stages are not in it
    bench_json = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert any(r["target"].endswith(".toy") and r["status"] == "ok" for r in bench_json["rows"])  # bench="cpu" by default


def test_a_broken_plug_in_is_named_and_skipped_not_fatal(tmp_path):
    points = "[cnnexport.targets]\nbroken = broken_target:ROW\nmissing = no_such_module:ROW\n"
    env = plugin_site(tmp_path / "site", "broken_target", "ROW = 'not a row'\n", points)
    r = cnnexport(env, tmp_path, "--help")
    assert r.returncode == 0 and "onnx" in r.stdout
    assert "ignoring the target plug-in broken (broken_target:ROW): TypeError" in r.stderr
    assert "ignoring the target plug-in missing (no_such_module:ROW): ModuleNotFoundError" in r.stderr
