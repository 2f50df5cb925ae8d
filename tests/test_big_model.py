"""A model whose weights exceed 2 GB: ONNX with external data, then simplify, fp16 and int8 of it, all verified.

Needs about 10 GB of memory, 10 GB of disk and 7 minutes on 2 cores: runs with CNNEXPORT_FULL=1.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.verdicts import verified

WIDE_MODEL = '''
import torch
from torch import nn


class WideHead(nn.Module):
    """A tiny conv and a 760,000-class linear head: 584 M parameters, 2.3 GB of fp32 weights."""

    def __init__(self, num_classes=760_000):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 16 * 16, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(torch.relu(self.conv(x)), 1))
'''


@pytest.mark.full
def test_weights_over_2gb_export_with_external_data_and_verify(cli, tmp_path):
    import sys

    import torch

    (tmp_path / "wide.py").write_text(WIDE_MODEL)
    sys.path.insert(0, str(tmp_path))
    try:
        from wide import WideHead
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    model = WideHead()
    with torch.no_grad():
        model.head.weight.mul_(10.0)  # logits with some spread, so the comparison means something
    torch.save(model.state_dict(), tmp_path / "wide.pt")
    del model

    out = tmp_path / "out" / "wide.onnx"
    r = cli(
        "onnx", tmp_path / "wide.pt", "--arch", f"{tmp_path / 'wide.py'}:WideHead", "--input-shape", "3,16,16", "--mean", "0.5",
        "--std", "0.25", "-o", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    artifact = r.json()["artifacts"][0]
    assert artifact["details"]["external_data"] is True
    files = sorted(os.path.basename(f) for f in artifact["files"])
    assert files == ["wide.onnx", "wide.onnx.data"]
    assert (out.parent / "wide.onnx.data").stat().st_size > 2 * 1024**3
    assert out.stat().st_size < 10 * 1024**2  # the graph alone; the weights live beside it
    assert verified(artifact["verification"])
    assert json.loads((out.parent / "wide.onnx.report.json").read_text())["artifacts"][0]["files"] == artifact["files"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".cnnexport-tmp-")]

    import numpy as np

    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((40, 3, 16, 16)).astype(np.float32))
    reference = ["--checkpoint", tmp_path / "wide.pt", "--arch", f"{tmp_path / 'wide.py'}:WideHead", "--json"]
    spec = ["--input-shape", "3,16,16", "--mean", "0.5", "--std", "0.25"]
    expected_files = {  # simplified stays past 2 GB; fp16 (1.2 GB) and int8 (0.6 GB) fit in one file
        "wide.sim.onnx": ["wide.sim.onnx", "wide.sim.onnx.data"],
        "wide.fp16.onnx": ["wide.fp16.onnx"],
        "wide.int8.onnx": ["wide.int8.onnx"],
    }
    runs = {  # simplify takes the input spec from the ONNX metadata
        "wide.sim.onnx": ["simplify", out],
        "wide.fp16.onnx": ["quantize", out, "--precision", "fp16", *spec],
        "wide.int8.onnx": ["quantize", out, "--calib", tmp_path / "calib.npy", "--samples", "32", "--holdout", "8", *spec],
    }
    for name, args in runs.items():
        r = cli(*args, *reference, "-o", out.parent / name)
        assert r.exit_code == 0, (name, r)
        artifact = r.json()["artifacts"][-1]
        assert verified(artifact["verification"]), name
        assert sorted(os.path.basename(f) for f in artifact["files"]) == expected_files[name]


def test_external_data_models_flow_through_simplify_fp16_and_int8(cli, lenet5_ckpt, tmp_path, monkeypatch):
    """Every ONNX stage reads and writes external data (what a model past 2 GB needs).

    The 2 GB threshold is lowered so a LeNet-5 takes that path; the test above runs a real one.
    """
    import onnx

    import exporter.targets.onnx.stage as onnx_stage

    monkeypatch.setattr(onnx_stage, "TWO_GB", 1000)
    out = tmp_path / "lenet.onnx"
    r = cli("onnx", lenet5_ckpt, "-o", out, "--json")
    assert r.exit_code == 0, r
    assert sorted(os.path.basename(f) for f in r.json()["artifacts"][0]["files"]) == ["lenet.onnx", "lenet.onnx.data"]

    def external(path):
        return onnx_stage.has_external_data(onnx.load(str(path), load_external_data=False))

    runs = {
        "lenet.sim.onnx": ("simplify", out, "--checkpoint", lenet5_ckpt),
        "lenet.fp16.onnx": ("quantize", out, "--precision", "fp16", "--checkpoint", lenet5_ckpt),
        "lenet.int8.onnx": ("quantize", out, "--calib", "digits", "--samples", "64", "--checkpoint", lenet5_ckpt),
    }
    for name, args in runs.items():
        r = cli(*args, "-o", tmp_path / name, "--json")
        assert r.exit_code == 0, (name, r)
        artifact = r.json()["artifacts"][-1]
        assert verified(artifact["verification"]), name
        assert sorted(os.path.basename(f) for f in artifact["files"]) == [name, name + ".data"], name
        assert external(tmp_path / name), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["lenet.onnx", "lenet.onnx.data", "lenet.onnx.report.json"]
        + [f for name in runs for f in (name, name + ".data", name + ".report.json")]
    )


@pytest.mark.parametrize("one_file", [True, False])
def test_simplify_renames_onnxsim_external_data_to_ours(exported_onnx, tmp_path, one_file):
    """onnxsim names the weights file of a >2 GB result its own way (or splits it): cnnexport
    installs exactly <name> and <name>.data, so both must be made to match."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from exporter.targets.onnx.simplify import _rename_external_data

    model = onnx.load(str(exported_onnx))
    onnx.save_model(
        model,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=one_file,
        location="onnxsim-weights.bin",
    )
    graph = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    _rename_external_data(graph, tmp_path, "m.onnx.data")
    onnx.save_model(graph, str(tmp_path / "m.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    x = np.random.default_rng(0).standard_normal((2, *[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]))
    feed = {model.graph.input[0].name: x.astype(np.float32)}
    original = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    renamed = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_array_equal(original, renamed)
