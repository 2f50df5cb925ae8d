"""The same checkpoint and options give byte-identical artifacts and identical report numbers.

Two separate processes (different PYTHONHASHSEED, run side by side) each export one checkpoint
as every artifact kind that runs here, through the CLI, into folders with the same relative
layout. Every artifact must match byte for byte and every report must match once the wall-clock
``seconds`` fields are removed. (ONNX via torch.export, onnxsim, onnxruntime quantization and
TorchScript are all deterministic here; TorchScript only because the stage rewrites torch's
random serialization id and sorts the class constants torch.jit.script writes in hash-seed
order, see exporter/targets/torchscript/stage.py make_reproducible.) It runs with CNNEXPORT_FULL=1; the
default suite has the in-process check below and tests/test_run.py's serial-vs-parallel runs
(two processes, byte-identical manifests).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from tests.verdicts import verified

SCRIPT = r"""
import json, sys
from typer.testing import CliRunner
from exporter.cli import app

steps = [
    ("onnx", ["onnx", "../model.pt", "-o", "m.onnx"]),
    ("onnx-legacy", ["onnx", "../model.pt", "-o", "m.legacy.onnx", "--exporter", "legacy"]),
    ("torchscript", ["torchscript", "../model.pt", "-o", "m.ts"]),
    ("torchscript-script", ["torchscript", "../model.pt", "-o", "m.script.ts", "--script"]),
    ("simplify", ["simplify", "m.onnx", "--checkpoint", "../model.pt"]),
    ("int8", ["quantize", "m.onnx", "--calib", "digits", "--samples", "64", "--holdout", "16", "--checkpoint", "../model.pt"]),
    ("int8-tensorrt", ["quantize", "m.onnx", "--target", "tensorrt", "--calib", "digits", "--samples", "64", "--holdout", "16",
                       "--method", "entropy", "--checkpoint", "../model.pt"]),
    ("fp16", ["quantize", "m.onnx", "--precision", "fp16", "--checkpoint", "../model.pt"]),
]
reports = {}
for name, args in steps:
    r = CliRunner().invoke(app, args + ["--json"])
    if r.exit_code != 0:
        sys.exit(f"{name} exited {r.exit_code}: {r.stderr[-800:]}")
    reports[name] = json.loads(r.stdout)
print(json.dumps(reports))
"""


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


@pytest.mark.full
def test_two_processes_give_byte_identical_artifacts_and_reports(tmp_path):
    import torch

    from tests.conftest import build_model

    torch.save({"arch": "lenet5", "model_state_dict": build_model("lenet5").state_dict()}, tmp_path / "model.pt")
    runs = {}
    for name, hash_seed in (("first", "1"), ("second", "2")):
        folder = tmp_path / name
        folder.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        runs[name] = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    reports = {}
    for name, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        reports[name] = json.loads(stdout.strip().splitlines()[-1])

    first, second = tmp_path / "first", tmp_path / "second"
    artifacts = sorted(p.name for p in first.iterdir() if not p.name.endswith(".report.json"))
    assert len(artifacts) == 9  # 8 models + the TensorRT calibration cache
    assert artifacts == sorted(p.name for p in second.iterdir() if not p.name.endswith(".report.json"))
    different = [name for name in artifacts if (first / name).read_bytes() != (second / name).read_bytes()]
    assert not different, f"not byte-identical across processes: {different}"
    assert _without_timings(reports["first"]) == _without_timings(reports["second"])
    for kind, report in reports["first"].items():
        assert verified(report["artifacts"][-1]["verification"]), kind


def test_scripted_constants_are_written_in_one_order():
    """What torch.jit.script writes in set (hash-seed) order comes out of make_reproducible sorted."""
    from exporter.targets.torchscript.stage import _sorted_constants

    head = b"class Conv2d(Module):\n  weight : Tensor\n"
    constants = [
        b"  groups : Final[int] = 1",
        b"  dilation : Final[Tuple[int, int]] = (1, 1)",
        b'  padding_mode : Final[str] = "zeros"',
    ]
    tail = b"\n  def forward(self: __torch__.Conv2d,\n    input: Tensor) -> Tensor:\n    return input\n"
    orders = {_sorted_constants(head + b"\n".join(random.Random(seed).sample(constants, 3)) + tail) for seed in range(6)}
    assert orders == {head + b"\n".join(sorted(constants)) + tail}
