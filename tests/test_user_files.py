"""The user's files are never harmed, and every option and data source is checked before any work.

Each case of issue 24's first list is reproduced as the user typed it; each refusal is exit 2
with one sentence naming the input (or the flag and the allowed range), the input's bytes are
unchanged and no file appeared.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build_model, files_in
from tests.verdicts import passed


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path, simple_cnn_ckpt) -> Path:
    """A user's folder: their trained checkpoint (a copy, as in the issue) and calibration arrays."""
    shutil.copy(simple_cnn_ckpt, tmp_path / "resnet18_copy.pt")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((12, 3, 32, 32)).astype(np.float32))
    return tmp_path


def refused(r, *words: str) -> str:
    """Exit 2, one `error:` line holding every word, no traceback."""
    assert r.exit_code == 2, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r
    assert "Traceback" not in r.stderr + r.stdout, r
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def test_the_issue_case_onnx_over_the_checkpoint_is_refused(cli, folder, monkeypatch):
    monkeypatch.chdir(folder)
    before, files = sha("resnet18_copy.pt"), files_in(folder)
    r = cli("onnx", "resnet18_copy.pt", "--arch", "simple_cnn", "-o", "resnet18_copy.pt")
    line = refused(r, "resnet18_copy.pt", "is the checkpoint", "-o")
    assert "wrote" not in r.stdout + r.stderr and "exporting" not in r.stderr, line  # refused before any work
    assert sha("resnet18_copy.pt") == before and files_in(folder) == files


@pytest.mark.parametrize("spelling", ["dotdot", "missing-dotdot", "absolute", "symlink", "hardlink"])
def test_every_spelling_of_the_checkpoint_is_refused(cli, folder, monkeypatch, spelling):
    monkeypatch.chdir(folder)
    (folder / "sub").mkdir()
    output = {
        "dotdot": "sub/../resnet18_copy.pt",
        "missing-dotdot": "nowhere/../resnet18_copy.pt",
        "absolute": str(folder / "resnet18_copy.pt"),
        "symlink": "link.onnx",
        "hardlink": "hard.onnx",
    }[spelling]
    if spelling == "symlink":
        os.symlink("resnet18_copy.pt", "link.onnx")
    if spelling == "hardlink":
        os.link("resnet18_copy.pt", "hard.onnx")
    before, files = sha("resnet18_copy.pt"), files_in(folder)
    r = cli("onnx", "resnet18_copy.pt", "--arch", "simple_cnn", "-o", output)
    refused(r, "is the checkpoint", "destroy")
    assert sha("resnet18_copy.pt") == before and files_in(folder) == files  # no 'nowhere' folder either


def test_outputs_onto_data_and_references_are_refused(cli, folder, exported_onnx, monkeypatch):
    """--calib, --images, --eval, --checkpoint, --labels: each is an input a -o may not name."""
    monkeypatch.chdir(folder)
    images = folder / "images"
    images.mkdir()
    onnx_copy = shutil.copy(exported_onnx, folder / "model.onnx")
    (folder / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    before = {p: sha(p) for p in ("calib.npy", "model.onnx", "labels.txt", "resnet18_copy.pt")}
    files = files_in(folder)
    cases = [
        (("quantize", onnx_copy, "--calib", "calib.npy", "-o", "calib.npy"), "the --calib data"),
        (("onnx", "resnet18_copy.pt", "--arch", "simple_cnn", "--images", "calib.npy", "-o", "./calib.npy"), "the --images data"),
        (("quantize", onnx_copy, "--calib", "calib.npy", "--eval", "calib.npy", "-o", "calib.npy"), "calib.npy"),
        (
            ("simplify", onnx_copy, "--checkpoint", "resnet18_copy.pt", "--arch", "simple_cnn", "-o", "resnet18_copy.pt"),
            "the --checkpoint reference",
        ),
        (("onnx", "resnet18_copy.pt", "--arch", "simple_cnn", "--labels", "labels.txt", "-o", "labels.txt"), "the --labels file"),
        (
            ("quantize", "resnet18_copy.pt", "--arch", "simple_cnn", "--calib", "images", "-o", "images/m.onnx"),
            "inside the --calib data",
        ),
    ]
    for args, role in cases:
        refused(cli(*args), role)
    assert {p: sha(p) for p in before} == before and files_in(folder) == files


def test_a_companion_file_onto_an_input_is_refused(cli, folder, monkeypatch):
    """The report written beside the artifact is an output too: NAME.onnx.report.json may not be the checkpoint."""
    monkeypatch.chdir(folder)
    os.rename("resnet18_copy.pt", "m.onnx.report.json")
    before = sha("m.onnx.report.json")
    refused(cli("onnx", "m.onnx.report.json", "--arch", "simple_cnn", "-o", "m.onnx"), "m.onnx.report.json", "is the checkpoint")
    assert sha("m.onnx.report.json") == before


def test_torchscript_default_output_is_never_the_torchscript_checkpoint(cli, folder, monkeypatch):
    """A TorchScript checkpoint named m.ts exported to TorchScript would land on itself by default."""
    import torch

    monkeypatch.chdir(folder)
    torch.jit.trace(build_model("simple_cnn").eval(), torch.zeros(1, 3, 32, 32)).save("m.ts")
    before = sha("m.ts")
    refused(cli("torchscript", "m.ts"), "m.ts", "is the checkpoint")
    assert sha("m.ts") == before


def test_run_never_writes_over_its_inputs(cli, folder, monkeypatch):
    """`run` checks every stage's output (and manifest, report, state) against the checkpoint and the data."""
    import torch

    monkeypatch.chdir(folder)
    torch.jit.trace(build_model("simple_cnn").eval(), torch.zeros(1, 3, 32, 32)).save("m.ts")
    before, files = sha("m.ts"), files_in(folder)
    refused(
        cli("run", "m.ts", "--recipe", "release", "-o", ".", "--set", "stages.torchscript.enabled=true"),
        "m.ts",
        "is the checkpoint",
    )
    (folder / "images").mkdir()
    refused(cli("run", "m.ts", "--recipe", "release", "-o", "images/out", "--calib", "images"), "inside calibration.data")
    recipe = folder / "report.md"  # a recipe file where the run writes its report
    recipe.write_text("name: mine\nstages:\n  onnx: {}\n")
    refused(cli("run", "m.ts", "--recipe", str(recipe), "-o", "."), "is the recipe")
    assert sha("m.ts") == before and files_in(folder) == files | {"images", "report.md"}


# ----------------------------------------------------------------- options checked before work


@pytest.mark.parametrize(
    "args,words",
    [
        (("--opset", "99"), ("--opset", "opset 99", "18 to")),
        (("--opset", "7"), ("--opset", "18 to", "--exporter legacy")),
        (("--opset", "24", "--exporter", "legacy"), ("--opset", "legacy exporter", "7 to 23")),
        (("--opset", "0", "--exporter", "legacy"), ("--opset", "7 to 23")),
    ],
)
def test_an_opset_the_exporter_cannot_write_is_exit_2_before_work(cli, folder, args, words):
    files = files_in(folder)
    r = cli("onnx", folder / "resnet18_copy.pt", "--arch", "simple_cnn", "-o", folder / "m.onnx", *args)
    line = refused(r, *words)
    assert "loading" not in r.stderr, line
    assert files_in(folder) == files


def test_an_opset_is_written_as_asked(cli, folder):
    """In range, the file carries the opset asked for (dynamo used to write 18 whatever was asked)."""
    import onnx

    for exporter, opset in (("legacy", 13), ("dynamo", 20)):
        out = folder / f"m{opset}.onnx"
        r = cli(
            "onnx", folder / "resnet18_copy.pt", "--arch", "simple_cnn", "-o", out, "--opset", opset, "--exporter", exporter,
            "--json",
        )  # fmt: skip
        report = passed(r, kind="onnx")["artifacts"][-1]
        assert report["details"]["opset"] == opset
        assert [o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")] == [opset]


def test_a_recipe_opset_names_its_key(cli, folder):
    r = cli(
        "run", folder / "resnet18_copy.pt", "--recipe", "release", "-o", folder / "out", "--set", "stages.onnx.opset=99",
        "--set", "model.arch=simple_cnn",
    )  # fmt: skip
    refused(r, "stages.onnx.opset", "18 to")
    assert not (folder / "out").exists()


def test_the_issue_case_quantize_with_empty_or_corrupt_calibration_writes_nothing(cli, folder):
    """Checked before the ONNX export it needs first: no resnet18_copy.onnx, no report (it used to leave both)."""
    empty, corrupt = folder / "empty", folder / "corrupt"
    empty.mkdir()
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"\x89PNG not really")
    files = files_in(folder)
    for data, words in (
        (empty, ("--calib", "contains no images")),
        (corrupt, ("--calib", "cannot be read")),
        (folder / "missing", ("--calib", "does not exist")),
    ):
        r = cli("quantize", folder / "resnet18_copy.pt", "--arch", "simple_cnn", "--calib", data)
        line = refused(r, *words)
        assert "exporting" not in r.stderr, line
        assert files_in(folder) == files


def test_eval_and_images_are_checked_before_work(cli, folder):
    np.save(folder / "wrong.npy", np.zeros((4, 1, 32, 32), np.float32))
    files = files_in(folder)
    r = cli(
        "quantize", folder / "resnet18_copy.pt", "--arch", "simple_cnn", "--calib", folder / "calib.npy",
        "--eval", folder / "calib.npy",
    )  # fmt: skip
    assert "exporting" not in refused(r, "--eval", "no labels") + r.stderr
    r = cli("onnx", folder / "resnet18_copy.pt", "--arch", "simple_cnn", "--images", folder / "wrong.npy")
    assert "exporting" not in refused(r, "--images") + r.stderr
    assert files_in(folder) == files


def test_run_checks_every_stage_source_before_stage_one(cli, folder):
    """evaluation.data without labels, a missing verify.images: exit 2 naming the key, no output folder."""
    out = folder / "out"
    common = ("--set", "model.arch=simple_cnn", "--set", "stages.int8.enabled=true", "--calib", str(folder / "calib.npy"))
    r = cli(
        "run", folder / "resnet18_copy.pt", "--recipe", "release", "-o", out, *common,
        "--set", f"evaluation.data={folder / 'calib.npy'}",
    )  # fmt: skip
    refused(r, "evaluation.data", "no labels")
    r = cli(
        "run", folder / "resnet18_copy.pt", "--recipe", "release", "-o", out, *common,
        "--set", f"verify.images={folder / 'nothing'}",
    )  # fmt: skip
    refused(r, "verify.images", "does not exist")
    assert not out.exists()


# ----------------------------------------------------------------- the cache names every backend


def test_every_row_names_its_backends_and_the_report_lists_them():
    from exporter import kinds
    from exporter.report import versions

    rows = kinds.BY_NAME
    assert {"openvino", "nncf"} <= set(rows["openvino"].versioned())
    assert "coremltools" in rows["coreml"].versioned() and "onnxsim" in rows["simplify"].versioned()
    assert "tensorrt" in rows["tensorrt"].versioned()
    assert "openvino" not in rows["onnx"].versioned()  # upgrading OpenVINO does not rebuild the ONNX
    installed = versions()
    for row in kinds.KINDS:
        for package in row.versioned():
            if package != "tensorrt":  # not installable here
                assert package in installed, (row.name, package)


def test_a_backend_upgrade_rebuilds_only_the_stages_it_made(cli, folder, monkeypatch):
    """A fake onnxsim upgrade: the simplify stage is rebuilt, the ONNX stage stays cached."""
    from exporter import report

    recipe = folder / "small.yaml"
    recipe.write_text("name: small\nmodel: {arch: simple_cnn}\nstages:\n  onnx: {enabled: true}\n  simplify: {enabled: true}\n")
    args = ("run", folder / "resnet18_copy.pt", "--recipe", recipe, "-o", folder / "out", "--json")
    first = cli(*args)
    assert first.exit_code == 0, first
    assert {k: v["status"] for k, v in first.json()["manifest"]["stages"].items()} == {"onnx": "pass", "simplify": "pass"}
    real = report.versions
    monkeypatch.setattr(report, "versions", lambda: {**real(), "onnxsim": "999.0"})
    second = cli(*args)
    assert second.exit_code == 0, second
    timings = second.json()["timings"]
    assert timings["onnx"]["cached"] is True and timings["simplify"]["cached"] is False
    assert second.json()["manifest"]["versions"]["onnxsim"] == "999.0"


# ----------------------------------------------------------------- concurrent use


def test_a_second_export_into_a_busy_folder_waits_for_the_first(folder):
    """While one process holds the folder, an export into it waits (and says so), then installs a consistent pair."""
    import json
    import subprocess
    import sys
    import threading
    import time

    from exporter.fsutil import folder_lock

    out = folder / "out"
    out.mkdir()
    cmd = [
        sys.executable, "-m", "exporter.cli", "onnx", str(folder / "resnet18_copy.pt"), "--arch", "simple_cnn",
        "-o", str(out / "m.onnx"), "--json",
    ]  # fmt: skip
    with folder_lock([out]):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not any("waiting for another" in x for x in lines):
            time.sleep(0.2)
        time.sleep(1)
        assert proc.poll() is None, lines
        assert any("waiting for another cnnexport writing into" in x for x in lines), lines
        assert not list(out.iterdir()), "it wrote while another process held the folder"
    stdout = proc.stdout.read()
    proc.wait(timeout=300)
    reader.join(timeout=10)
    assert proc.returncode == 0, lines
    artifact = passed(json.loads(stdout))["artifacts"][-1]
    report = json.loads((out / "m.onnx.report.json").read_text())
    assert report["artifacts"][-1]["sha256"] == sha(out / "m.onnx") == artifact["sha256"]


def test_the_spec_an_onnx_carries_wins_over_the_checkpoints_defaults(cli, simple_cnn_ckpt, tmp_path):
    """Issue 43: quantize / openvino from cnnexport's ONNX plus --checkpoint re-derived the registry's 32x32 ImageNet spec."""
    onnx = tmp_path / "m.onnx"
    made = cli("onnx", simple_cnn_ckpt, "--input-shape", "3,48,48", "--mean", "0,0,0", "--std", "1,1,1", "-o", onnx)
    assert made.exit_code == 0, made
    for verb, extra, out in (("quantize", ("--precision", "fp16"), "m.fp16.onnx"), ("openvino", (), "m.xml")):
        r = cli(verb, onnx, *extra, "--checkpoint", simple_cnn_ckpt, "-o", tmp_path / out, "--json")
        assert r.exit_code == 0, (verb, r)
        report = r.json()
        assert report["model"]["input_shape"] == [3, 48, 48] and report["model"]["mean"] == [0.0, 0.0, 0.0], verb
        passed(r)
    # a flag still overrides the stored spec, unless the graph cannot take it: one sentence, exit 2, nothing written
    r = cli(
        "quantize", onnx, "--precision", "fp16", "--checkpoint", simple_cnn_ckpt, "--input-shape", "3,64,64",
        "-o", tmp_path / "x.fp16.onnx",
    )  # fmt: skip
    assert r.exit_code == 2 and "--input-shape 3,64,64 does not fit m.onnx, whose graph takes 3x48x48" in r.stderr, r
    assert "Traceback" not in r.stderr and not (tmp_path / "x.fp16.onnx").exists()
