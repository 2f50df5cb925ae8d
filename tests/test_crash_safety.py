"""Crash safety of every single-stage verb: SIGINT or SIGKILL at a random moment mid-export.

Whatever the moment, nothing partial appears under a final name, the previous good artifact is
byte-for-byte intact, and a rerun completes. SIGINT also cleans its staging folder and exits 130;
SIGKILL cannot clean up, so a `.cnnexport-tmp-*` folder may stay (never a file under a final
name); the next export into that folder deletes it, since its owner process is gone. Two `cnnexport run` into one
folder at once: one is refused with exit 2 or they take turns, never interleaved files.

The verb x signal matrix needs a model big enough to interrupt (cifar_resnet18) and a rerun per
cell, about 30 s a cell on 2 cores, and the race starts two processes: both run with
CNNEXPORT_FULL=1. The default suite covers SIGINT during `onnx` (tests/test_interrupt.py),
SIGKILL during `run` and the lock held in process (tests/test_run.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ctrl_c_as_usual
from tests.verdicts import verified

CLI = Path(sys.executable).with_name("cnnexport")
PREVIOUS = b"previous good artifact \x00\x01"

VERBS = {
    "onnx": lambda w: ["onnx", w["ckpt"], "-o", w["out"] / "m.onnx"],
    "torchscript": lambda w: ["torchscript", w["ckpt"], "-o", w["out"] / "m.ts"],
    "simplify": lambda w: ["simplify", w["onnx"], "--checkpoint", w["ckpt"], "-o", w["out"] / "m.sim.onnx"],
    "quantize-int8": lambda w: [
        "quantize", w["onnx"], "--calib", w["calib"], "--samples", "128", "--checkpoint", w["ckpt"],
        "-o", w["out"] / "m.int8.onnx",
    ],
    "quantize-fp16": lambda w: [
        "quantize", w["onnx"], "--precision", "fp16", "--checkpoint", w["ckpt"], "-o", w["out"] / "m.fp16.onnx",
    ],
}  # fmt: skip
SIGNALS = {"SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    import torch

    from exporter import export_artifact, load_checkpoint
    from tests.conftest import build_model

    folder = tmp_path_factory.mktemp("crash")
    ckpt = folder / "cifar.pt"
    torch.save({"arch": "cifar_resnet18", "model_state_dict": build_model("cifar_resnet18").state_dict()}, ckpt)
    onnx = folder / "cifar.onnx"
    assert export_artifact("onnx", load_checkpoint(ckpt), onnx, {"exporter": "legacy"}).verification.status == "pass"
    # calibration inputs of the model's own 3x32x32 shape (the 1-channel digits are refused for it, before any work)
    calib = folder / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((192, 3, 32, 32)).astype(np.float32))
    return {"ckpt": ckpt, "onnx": onnx, "folder": folder, "calib": calib}


def _final_names(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if not p.name.startswith(".cnnexport")}


@pytest.mark.full
@pytest.mark.parametrize("verb, sig", [(v, s) for v in VERBS for s in SIGNALS])
def test_a_signal_mid_export_leaves_no_partial_file_and_a_rerun_completes(work, tmp_path, verb, sig):
    out = tmp_path / "out"
    out.mkdir()
    args = [str(a) for a in VERBS[verb]({**work, "out": out})]
    target = Path(args[args.index("-o") + 1])
    target.write_bytes(PREVIOUS)
    proc = subprocess.Popen(
        [str(CLI), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_usual
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(out.glob(".cnnexport-tmp-*")):
        time.sleep(0.02)
    assert proc.poll() is None, f"{verb} finished before it could be interrupted: {proc.communicate()[1][-1500:]}"
    time.sleep(random.Random(f"{verb}-{sig}").uniform(0.0, 1.0))  # somewhere in the export or the verification
    proc.send_signal(SIGNALS[sig])
    _, stderr = proc.communicate(timeout=120)

    assert target.read_bytes() == PREVIOUS
    assert _final_names(out) == {target.name}, "a file appeared under a final name"
    if sig == "SIGINT":
        assert proc.returncode == 130, stderr[-1500:]
        assert "interrupted" in stderr and "Traceback" not in stderr
        assert not list(out.glob(".cnnexport-tmp-*")), "SIGINT left its staging folder"
    else:
        assert proc.returncode == -signal.SIGKILL

    rerun = subprocess.run([str(CLI), *args, "--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert json.loads(rerun.stdout)["artifacts"][-1]["verification"]["status"] == "pass"
    assert target.read_bytes() != PREVIOUS and target.stat().st_size > 1000
    assert not list(out.glob(".cnnexport-tmp-*")), "the rerun left a dead process's staging folder"


@pytest.mark.full
def test_two_concurrent_runs_into_one_folder_are_serialized_or_refused(tmp_path):
    """Started together: each either finishes or is refused (exit 2, saying why); the result is one consistent set."""
    import torch

    from tests.conftest import build_model

    ckpt = tmp_path / "cifar.pt"
    torch.save({"arch": "simple_cnn", "model_state_dict": build_model("simple_cnn").state_dict()}, ckpt)
    out = tmp_path / "dist"
    cmd = [
        str(CLI), "run", str(ckpt), "--recipe", "server-onnx-cpu", "-o", str(out), "--set", "stages.int8.enabled=false",
        "--set", "stages.onnx.exporter=legacy", "-q",
    ]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, stderr in results:
        if code == 2:
            assert "another cnnexport run is writing to" in stderr and "Traceback" not in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    from exporter.fsutil import sha256_of

    for stage in manifest["stages"].values():
        assert verified(stage["verification"])
        for f in stage["files"]:
            assert sha256_of(out / f["path"]) == f["sha256"]
    assert not list(out.glob(".cnnexport-tmp-*"))
    assert _final_names(out) == {
        "manifest.json",
        "report.md",
        "cifar.onnx",
        "cifar.onnx.report.json",
        "cifar.sim.onnx",
        "cifar.sim.onnx.report.json",
    }


def test_an_export_sweeps_staging_folders_of_dead_processes_only(cli, lenet5_ckpt, tmp_path):
    """What a SIGKILL leaves behind goes with the next export; a live process's folder stays."""
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead, live, foreign = out / ".cnnexport-tmp-dead", out / ".cnnexport-tmp-live", out / ".cnnexport-tmp-foreign"
    for folder, owner in ((dead, gone.pid), (live, os.getppid()), (foreign, None)):
        folder.mkdir()
        (folder / "half.onnx").write_bytes(b"half")
        if owner is not None:
            (folder / ".cnnexport-owner").write_text(f"{owner}\n")
    r = cli("torchscript", lenet5_ckpt, "-o", out / "m.ts")
    assert r.exit_code == 0, r
    assert not dead.exists()
    assert live.exists() and foreign.exists()  # a concurrent export, and a folder we cannot judge
    assert _final_names(out) == {"m.ts", "m.ts.report.json"}
