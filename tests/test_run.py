"""`cnnexport run --recipe`: stages as a graph, cached, resumable, parallel."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import trained_digits_net
from tests.verdicts import verified

FAST = ["--set", "calibration.samples=64", "--set", "calibration.holdout=32"]


@pytest.fixture(scope="module")
def lenet_ckpt(tmp_path_factory):
    """A LeNet-5 trained on the digits (the demo's checkpoint form)."""
    folder = tmp_path_factory.mktemp("run_ckpt")
    path = folder / "lenet5_digits.pt"
    shutil.copy(trained_digits_net(tmp_path_factory, "lenet5"), path)  # tests/conftest.py
    return path


def _stage_status(manifest: dict) -> dict:
    return {name: stage["status"] for name, stage in manifest["stages"].items()}


def test_recipe_run_builds_every_artifact_then_serves_the_second_run_from_cache(cli, lenet_ckpt, tmp_path):
    out = tmp_path / "dist"
    first = cli("run", lenet_ckpt, "--recipe", "demo", "-o", out, *FAST, "--json")
    assert first.exit_code == 0, first
    manifest = first.json()["manifest"]
    assert _stage_status(manifest) == {s: "pass" for s in ("torchscript", "onnx", "simplify", "int8", "fp16")}
    for stage in manifest["stages"].values():
        for f in stage["files"]:
            assert (out / f["path"]).stat().st_size == f["bytes"]
        assert stage["verification"]["batch_sizes"]
    assert manifest["model"]["arch"] == "lenet5" and manifest["recipe"]["name"] == "demo"
    assert (out / "report.md").read_text().count("| pass |") == 5
    cold = first.json()["timings"]
    manifest_bytes = (out / "manifest.json").read_bytes()

    second = cli("run", lenet_ckpt, "--recipe", "demo", "-o", out, *FAST, "--json")
    assert second.exit_code == 0, second
    warm = second.json()["timings"]
    assert all(t["cached"] for t in warm.values()) and not any(t["cached"] for t in cold.values())
    assert sum(t["seconds"] for t in warm.values()) < 0.05 * sum(t["seconds"] for t in cold.values())
    assert (out / "manifest.json").read_bytes() == manifest_bytes

    changed = cli("run", lenet_ckpt, "--recipe", "demo", "-o", out, *FAST, "--set", "stages.int8.method=percentile", "--json")
    assert changed.exit_code == 0, changed
    timings = changed.json()["timings"]
    assert not timings["int8"]["cached"] and timings["onnx"]["cached"] and timings["fp16"]["cached"]
    assert changed.json()["manifest"]["stages"]["int8"]["details"]["method"] == "percentile"


@pytest.mark.full
def test_parallel_and_serial_runs_give_identical_artifacts(lenet_ckpt, tmp_path):
    cli_path = Path(sys.executable).with_name("cnnexport")
    for jobs, name in ((1, "serial"), (2, "parallel")):
        done = subprocess.run(
            [str(cli_path), "run", str(lenet_ckpt), "--recipe", "demo", "-o", str(tmp_path / name), "-j", str(jobs), "-q", *FAST],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    serial = json.loads((tmp_path / "serial" / "manifest.json").read_text())
    parallel = json.loads((tmp_path / "parallel" / "manifest.json").read_text())
    shas = lambda m: {n: [f["sha256"] for f in s["files"]] for n, s in m["stages"].items()}  # noqa: E731
    assert shas(serial) == shas(parallel)
    assert (tmp_path / "serial" / "manifest.json").read_bytes() == (tmp_path / "parallel" / "manifest.json").read_bytes()


def test_killed_run_resumes_without_redoing_finished_stages(lenet_ckpt, tmp_path):
    out = tmp_path / "dist"
    cli_path = Path(sys.executable).with_name("cnnexport")
    cmd = [str(cli_path), "run", str(lenet_ckpt), "--recipe", "demo", "-o", str(out), *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stamp = out / ".cnnexport" / "stages" / "onnx.json"
    deadline = time.time() + 180
    while time.time() < deadline and not stamp.exists():
        time.sleep(0.05)
    assert stamp.exists(), "the run never finished its onnx stage"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # whatever is under a final name is complete: every stamped file matches its sha256
    for stamp_file in (out / ".cnnexport" / "stages").glob("*.json"):
        for f in json.loads(stamp_file.read_text())["entry"]["files"]:
            from exporter.fsutil import sha256_of

            assert sha256_of(out / f["path"]) == f["sha256"]
    again = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    timings = json.loads(again.stdout)["timings"]
    assert timings["torchscript"]["cached"] and timings["onnx"]["cached"]
    assert not timings["fp16"]["cached"]
    assert not list(out.glob(".cnnexport-tmp-*"))
    assert _stage_status(json.loads(again.stdout)["manifest"]) == {
        s: "pass" for s in ("torchscript", "onnx", "simplify", "int8", "fp16")
    }


def test_a_failing_stage_does_not_stop_independent_ones(cli, lenet_ckpt, tmp_path):
    out = tmp_path / "dist"
    r = cli("run", lenet_ckpt, "--recipe", "demo", "-o", out, *FAST, "--set", "verify.int8.max_rel_err=1e-9", "--json")
    assert r.exit_code == 1, r
    status = _stage_status(r.json()["manifest"])
    assert status["int8"] == "fail" and status["fp16"] == "pass" and status["simplify"] == "pass"
    assert not (out / "lenet5_digits.int8.onnx").exists()


def test_stages_downstream_of_a_failure_are_skipped_with_the_reason(cli, lenet_ckpt, tmp_path):
    r = cli(
        "run", lenet_ckpt, "--recipe", "server-onnx-cpu", "-o", tmp_path / "d", *FAST, "--set", "verify.fp32.max_rel_err=1e-15",
        "--json",
    )  # fmt: skip
    assert r.exit_code == 1, r
    status = _stage_status(r.json()["manifest"])
    assert status["onnx"] == "fail"
    assert status["simplify"].startswith("skipped (needs onnx") and status["int8"].startswith("skipped (needs simplify")


@pytest.mark.parametrize(
    "text,words",
    [
        ("stages:\n  onnx: {enabled: true, opsett: 13}\n", "stages.onnx.opsett: unknown key"),
        ("stages:\n  onnx: {enabled: maybe}\n", "stages.onnx.enabled"),
        ("verify:\n  batch_sizes: [0, 4]\n", "verify.batch_sizes"),
        ("stages: [onnx\n", "not valid YAML at line"),
        ("outputs:\n  name: ../escape\n", "outputs.name"),
        ("stages:\n  onnx: {enabled: false}\n", "enables no stages"),
        ("stages:\n  simplify: {enabled: true}\n  onnx: {enabled: false}\n", "stages.onnx"),
    ],
)
def test_broken_recipes_name_the_offending_key(cli, lenet_ckpt, tmp_path, text, words):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    out = tmp_path / "out"
    r = cli("run", lenet_ckpt, "--recipe", recipe, "-o", out)
    assert r.exit_code == 2, r
    assert words in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_every_problem_of_a_recipe_is_listed_on_its_own_line(cli, lenet_ckpt, tmp_path):
    """Issue 43: an opset below the dynamo exporter's and a misspelt key are both named, not '(and 1 more)'."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  onnx: {enabled: true, opset: 17, dynamic_bach: true}\n")
    r = cli("run", lenet_ckpt, "--recipe", recipe, "--dry-run")
    assert r.exit_code == 2, r
    lines = r.stderr.splitlines()
    assert lines[0].endswith("r.yaml: 2 problems:"), lines
    assert lines[1].startswith("  - stages.onnx.opset: opset 17 is outside") and "--exporter legacy" in lines[1]
    assert lines[2] == "  - stages.onnx.dynamic_bach: unknown key"
    assert "more problem" not in r.stderr and "Traceback" not in r.stderr


def test_set_with_a_wrong_path_or_type_is_refused(cli, lenet_ckpt, tmp_path):
    r = cli("run", lenet_ckpt, "--recipe", "demo", "--set", "stages.int8.methodd=entropy", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "stages.int8.methodd: unknown key" in r.stderr
    r = cli("run", lenet_ckpt, "--recipe", "demo", "--set", "calibration.samples=lots", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "calibration.samples" in r.stderr
    r = cli("run", lenet_ckpt, "--recipe", "no-such-recipe", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "release" in r.stderr


def test_set_takes_values_the_way_the_cli_flags_do(cli, lenet_ckpt, tmp_path):
    """--set model.input_shape=1,32,32 and model.mean=0.5, as --input-shape and --mean take them."""
    out = tmp_path / "out"
    r = cli(
        "run", lenet_ckpt, "--recipe", "demo", "-o", out, "--json", *FAST, "--set", "stages.int8.enabled=false",
        "--set", "stages.fp16.enabled=false", "--set", "stages.simplify.enabled=false",
        "--set", "stages.torchscript.enabled=false", "--set", "model.input_shape=1,32,32", "--set", "model.mean=0.25",
        "--set", "model.std=0.5", "--set", "verify.batch_sizes=1,3",
    )  # fmt: skip
    assert r.exit_code == 0, r
    manifest = r.json()["manifest"]
    assert manifest["model"]["input_shape"] == [1, 32, 32]
    assert manifest["model"]["mean"] == [0.25] and manifest["model"]["std"] == [0.5]
    assert manifest["stages"]["onnx"]["verification"]["batch_sizes"][:2] == [1, 3]
    from exporter import recipe

    assert recipe.load("demo", ["model.input_shape=3x64x64", "stages.int8.exclude=Conv, Gemm"]).model.input_shape == (3, 64, 64)
    assert recipe.load("demo", ["stages.int8.exclude=Conv, Gemm"]).stages.int8.exclude == ["Conv", "Gemm"]
    r = cli("run", lenet_ckpt, "--recipe", "demo", "--set", "model.input_shape=1,32", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "model.input_shape" in r.stderr


def test_dry_run_prints_the_plan_and_writes_nothing(cli, lenet_ckpt, tmp_path):
    out = tmp_path / "out"
    r = cli("run", lenet_ckpt, "--recipe", "release", "-o", out, "--dry-run", "--json")
    assert r.exit_code == 0, r
    plan = {row["stage"]: row["input"] for row in r.json()["plan"]}
    assert plan["simplify"] == "onnx" and plan["int8"] == "simplify" and plan["onnx"] == str(lenet_ckpt)
    assert not out.exists()


def test_recipes_lists_the_shipped_ones(cli):
    r = cli("recipes", "--json")
    assert r.exit_code == 0, r
    names = {row["name"] for row in r.json()}
    assert {"release", "server-onnx-cpu", "mobile-coreml", "edge-tensorrt", "demo"} <= names


def test_a_second_run_into_the_same_folder_is_refused_while_one_holds_it(cli, lenet_ckpt, tmp_path):
    from exporter.run_cache import OutputLock

    out = tmp_path / "busy"
    lock = OutputLock(out)
    try:
        r = cli("run", lenet_ckpt, "--recipe", "demo", "-o", out)
        assert r.exit_code == 2 and "another cnnexport run" in r.stderr
    finally:
        lock.release()


def test_release_recipe_runs_every_stage_and_tensorrt_is_skipped_not_passed(cli, lenet_ckpt, tmp_path):
    pytest.importorskip("coremltools")
    out = tmp_path / "rel"
    # LeNet-5 was trained on the digits: for this model they are the right calibration data
    r = cli("run", lenet_ckpt, "--recipe", "release", "-o", out, *FAST, "--calib", "digits", "--json")
    assert r.exit_code == 0, r
    stages = r.json()["manifest"]["stages"]
    for name in ("torchscript", "onnx", "simplify", "int8", "int8_tensorrt", "fp16", "coreml"):
        assert verified(stages[name]["verification"]), (name, stages[name]["status"])
    assert stages["int8_tensorrt"]["files"][0]["path"] == "lenet5_digits.int8-trt.onnx"  # primary file first
    trt = stages["tensorrt"]
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:
        assert trt["status"] == "skipped (tensorrt not installed)"
        kit = {Path(f["path"]).name for f in trt["files"]}
        assert {"build.sh", "README.md"} <= kit and (out / "lenet5_digits-tensorrt-kit" / "build.sh").exists()
        assert str(out) not in json.dumps(r.json()["manifest"])  # manifest paths are relative to the folder


ONLY_ONNX_AND_INT8 = [
    "--set", "stages.torchscript.enabled=false", "--set", "stages.coreml.enabled=false", "--set", "stages.tensorrt.enabled=false",
    "--set", "stages.fp16.enabled=false", "--set", "stages.openvino.enabled=false",
]  # fmt: skip


def test_release_without_calibration_data_skips_int8_and_says_so(cli, lenet_ckpt, tmp_path):
    out = tmp_path / "rel"
    r = cli("run", lenet_ckpt, "--recipe", "release", "-o", out, *ONLY_ONNX_AND_INT8, "--json")
    assert r.exit_code == 0, r
    stages = r.json()["manifest"]["stages"]
    reason = "skipped (needs calibration data: set calibration.data or --calib)"
    assert stages["int8"]["status"] == reason and stages["int8_tensorrt"]["status"] == reason
    assert verified(stages["onnx"]["verification"]) and verified(stages["simplify"]["verification"])
    assert "int8, int8_tensorrt, executorch_int8, litert_int8: skipped (needs calibration data" in r.stderr
    assert not list(out.glob("*.int8*"))


def test_calibration_data_unlike_the_model_is_refused_before_any_work(cli, simple_cnn_ckpt, tmp_path):
    """An RGB 32x32 model: the 1-channel digits, or a .npy of the wrong shape, are exit 2 and no output folder."""
    import numpy as np

    out = tmp_path / "rgb"
    r = cli("run", simple_cnn_ckpt, "--recipe", "server-onnx-cpu", "-o", out, "--calib", "digits")
    assert r.exit_code == 2, r
    assert "demo digits (1-channel 8x8 images)" in r.stderr and "3x32x32" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    wrong = tmp_path / "gray.npy"
    np.save(wrong, np.zeros((8, 1, 32, 32), np.float32))
    r = cli("run", simple_cnn_ckpt, "--recipe", "server-onnx-cpu", "-o", out, "--set", f"calibration.data={wrong}")
    assert r.exit_code == 2 and "(8, 1, 32, 32)" in r.stderr, r
    assert not out.exists()
    # shaped like the model's inputs: it runs
    good = tmp_path / "rgb.npy"
    np.save(good, np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32))
    r = cli(
        "run", simple_cnn_ckpt, "--recipe", "server-onnx-cpu", "-o", out, "--calib", good, "--set", "calibration.samples=32",
        "--set", "calibration.holdout=16", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert verified(r.json()["manifest"]["stages"]["int8"]["verification"])


def test_the_run_table_shows_a_kit_folder_as_one_entry():
    from exporter.cli.recipes import files_cell

    paths = ["m-tensorrt-kit/build.sh", "m-tensorrt-kit/m.int8-trt.onnx", "m.int8-trt.onnx", "m.int8-trt.calib"]
    assert files_cell(paths) == "m-tensorrt-kit/ (2 files), m.int8-trt.onnx, m.int8-trt.calib"
    assert files_cell(["m.onnx"]) == "m.onnx" and files_cell([]) == ""
