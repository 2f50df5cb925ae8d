"""Every output of every model verified with its task's metric: dict / tuple / dense outputs,
tampered second outputs, crushed class maps, an ill-conditioned model, detection post-processing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import user_model_class
from tests.verdicts import verified

MODELS = '''
import collections
import torch
from torch import nn


class TinySeg(nn.Module):
    """torchvision's segmentation interface: {"out": class map, "aux": auxiliary class map}."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        f = self.body(x)
        return collections.OrderedDict(out=self.head(f), aux=self.aux(f))


class RawHead(nn.Module):
    """An SSD-style raw head: (boxes (N, A, 4), scores (N, A, C)), no post-processing."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.boxes = nn.Linear(128, 40)
        self.scores = nn.Linear(128, 30)

    def forward(self, x):
        f = self.body(x)
        return self.boxes(f).view(-1, 10, 4), self.scores(f).view(-1, 10, 3)


class Detector(nn.Module):
    """torchvision's detection interface after post-processing: one dict per image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        f = self.conv(x).flatten(1)
        keep = int((f[0] > 0).sum()) % 5 + 1
        return [{"boxes": f[i, : keep * 4].view(-1, 4), "labels": torch.zeros(keep, dtype=torch.int64),
                 "scores": f[i, :keep]} for i in range(len(x))]


class IllConditioned(nn.Module):
    """A class map computed through a large cancelling activation: conv -> (1000 + tiny signal),
    BatchNorm removes the 1000 and divides by 0.01. fp32 keeps only ~4 digits of the signal."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 3, 1)
        with torch.no_grad():
            self.conv.weight.mul_(0.01)
            self.conv.bias.fill_(1000.0)
            self.bn.running_mean.fill_(1000.0)
            self.bn.running_var.fill_(1e-4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))
'''


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The models above as user code plus their checkpoints, and a calibration .npy."""
    import torch

    folder = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    made = {}
    for name in ("TinySeg", "RawHead", "Detector", "IllConditioned"):
        cls = user_model_class(folder, MODELS, "heads", name)
        model = cls()
        if name == "TinySeg":  # a few train-mode passes give the BatchNorm real statistics
            model.train()
            with torch.no_grad():
                for _ in range(3):
                    model(torch.randn(16, 3, 32, 32))
        torch.save(model.state_dict(), folder / f"{name.lower()}.pt")
        made[name.lower()] = folder / f"{name.lower()}.pt"
    calib = np.random.default_rng(0).normal(size=(96, 3, 32, 32)).astype(np.float32)
    np.save(folder / "calib.npy", calib)
    made["calib"] = folder / "calib.npy"
    made["folder"] = folder
    return made


def _arch(zoo, name: str) -> list[str]:
    return ["--arch", f"{zoo['folder'] / 'heads.py'}:{name}", "--input-shape", "3,32,32"]


def _verdict(result) -> dict:
    """The last artifact's verification from a --json run."""
    assert result.exit_code in (0, 1), result
    return result.json()["artifacts"][-1]["verification"]


def _passes_every_output(result, names: set[str]) -> dict:
    v = _verdict(result)
    assert verified(v), result
    assert set(v["outputs"]) == names
    assert all(row["status"] == "pass" for row in v["outputs"].values())
    compared = {c["output"] for c in v["checks"] if c["output"]}
    assert compared == names  # every output was compared, on every input set
    return v


def test_dict_outputs_are_named_and_verified_in_every_artifact_kind(zoo, cli, tmp_path):
    from exporter.runners import open_runner

    ckpt = zoo["tinyseg"]
    onnx_path = tmp_path / "seg.onnx"
    v = _passes_every_output(cli("onnx", ckpt, *_arch(zoo, "TinySeg"), "-o", onnx_path, "--json", "-q"), {"out", "aux"})
    assert {row["task"] for row in v["outputs"].values()} == {"segment"}
    assert v["outputs"]["out"]["pixel_agreement"] == 1.0 and v["outputs"]["out"]["miou"] == 1.0
    report = json.loads((tmp_path / "seg.onnx.report.json").read_text())
    assert report["model"]["num_classes"] == 5  # the class axis, not the width (32)
    assert [o["name"] for o in report["model"]["outputs"]] == ["out", "aux"]
    with open_runner(onnx_path) as runner:
        assert runner.output_names == ["out", "aux"]
        assert runner.metadata["num_classes"] == 5

    legacy = cli("onnx", ckpt, *_arch(zoo, "TinySeg"), "--exporter", "legacy", "-o", tmp_path / "legacy.onnx", "--json", "-q")
    _passes_every_output(legacy, {"out", "aux"})
    ts = cli("torchscript", ckpt, *_arch(zoo, "TinySeg"), "-o", tmp_path / "seg.ts", "--json", "-q")
    _passes_every_output(ts, {"out", "aux"})
    with open_runner(tmp_path / "seg.ts") as runner:  # a traced tuple: the names come from the stored spec
        assert list(runner.infer(np.zeros((2, 3, 32, 32), np.float32))) == ["out", "aux"]
    simplified = cli(
        "simplify", onnx_path, "--checkpoint", ckpt, "--arch", f"{zoo['folder'] / 'heads.py'}:TinySeg", "--json", "-q"
    )
    _passes_every_output(simplified, {"out", "aux"})
    fp16 = cli("quantize", onnx_path, "--precision", "fp16", "--checkpoint", ckpt, *_arch(zoo, "TinySeg"), "--json", "-q")
    _passes_every_output(fp16, {"out", "aux"})
    int8 = cli(
        "quantize", onnx_path, "--calib", zoo["calib"], "--samples", "64", "--holdout", "32",
        "--checkpoint", ckpt, *_arch(zoo, "TinySeg"), "-o", tmp_path / "seg.int8.onnx", "--json", "-q",
    )  # fmt: skip
    v8 = _passes_every_output(int8, {"out", "aux"})
    assert v8["outputs"]["out"]["pixel_agreement"] >= 0.9 and v8["outputs"]["out"]["miou"] >= 0.8
    # debug names the layers as the user's class does (no trace of the multi-output wrapper)
    debug = cli("debug", tmp_path / "seg.int8.onnx", "--checkpoint", ckpt, *_arch(zoo, "TinySeg"), "--json")
    assert debug.exit_code in (0, 1), debug
    modules = {layer["module"] for layer in debug.json()["layers"]}
    assert {"head", "aux", "body.0"} <= modules


def test_core_ml_and_openvino_carry_every_output(zoo, cli, tmp_path):
    pytest.importorskip("coremltools", reason="Core ML conversion needs coremltools (cnnexport[coreml])")
    pytest.importorskip("openvino", reason="OpenVINO needs cnnexport[openvino]")
    ckpt = zoo["tinyseg"]
    coreml = cli("coreml", ckpt, *_arch(zoo, "TinySeg"), "--precision", "fp32", "-o", tmp_path / "seg.mlpackage", "--json", "-q")
    _passes_every_output(coreml, {"out", "aux"})
    onnx_path = tmp_path / "seg.onnx"
    assert cli("onnx", ckpt, *_arch(zoo, "TinySeg"), "-o", onnx_path, "-q").exit_code == 0
    _passes_every_output(cli("openvino", onnx_path, "--checkpoint", ckpt, *_arch(zoo, "TinySeg"), "--json", "-q"), {"out", "aux"})
    refused = cli("coreml", ckpt, *_arch(zoo, "TinySeg"), "--classifier", "-o", tmp_path / "c.mlpackage")
    assert refused.exit_code == 2 and "--classifier needs a model with one (N, C) logits output" in refused.stderr


def _append_to_output(onnx_path, out_path, output: str, op: str, constant: np.ndarray | None = None) -> None:
    """Rewire graph output ``output`` through one more node (Neg, or Add of ``constant``)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inner = output + "_before_tamper"
    for node in graph.node:
        node.output[:] = [inner if n == output else n for n in node.output]
    inputs = [inner]
    if constant is not None:
        graph.initializer.append(numpy_helper.from_array(constant.astype(np.float32), "tamper_constant"))
        inputs.append("tamper_constant")
    graph.node.append(helper.make_node(op, inputs, [output]))
    onnx.save(model, str(out_path))


def test_a_tampered_second_output_fails_and_is_named(zoo, cli, tmp_path):
    ckpt = zoo["rawhead"]
    onnx_path = tmp_path / "head.onnx"
    ok = cli("onnx", ckpt, *_arch(zoo, "RawHead"), "-o", onnx_path, "--json", "-q")
    v = _passes_every_output(ok, {"0", "1"})
    assert {row["task"] for row in v["outputs"].values()} == {"regress"}
    assert v["outputs"]["1"]["max_channel_rel_err"] is not None

    tampered = tmp_path / "tampered.onnx"
    _append_to_output(onnx_path, tampered, "1", "Neg")
    result = cli("verify", tampered, "--checkpoint", ckpt, *_arch(zoo, "RawHead"), "--json")
    assert result.exit_code == 1, result
    v = _verdict(result)
    assert v["status"] == "fail" and "output 1" in v["reason"] and "max error" in v["reason"]
    assert v["outputs"]["0"]["status"] == "pass" and v["outputs"]["1"]["status"] == "fail"
    assert v["worst_output"] == "1"


def test_a_crushed_class_map_fails_on_pixel_agreement(zoo, cli, tmp_path):
    ckpt = zoo["tinyseg"]
    onnx_path = tmp_path / "seg.onnx"
    assert cli("onnx", ckpt, *_arch(zoo, "TinySeg"), "--outputs", "out", "-o", onnx_path, "-q").exit_code == 0
    offset = np.zeros((1, 5, 1, 1), np.float32)
    offset[0, 0] = 3.0  # class 0 wins most pixels
    crushed = tmp_path / "crushed.onnx"
    _append_to_output(onnx_path, crushed, "out", "Add", offset)
    loose = ["--max-rel-err", "10", "--min-cosine", "-1"]  # only the class-map rule can catch it now
    result = cli("verify", crushed, "--checkpoint", ckpt, *_arch(zoo, "TinySeg"), "--outputs", "out", *loose, "--json")
    assert result.exit_code == 1, result
    v = _verdict(result)
    assert "pixel agreement" in v["reason"] and v["outputs"]["out"]["pixel_agreement"] < 0.9
    assert v["outputs"]["out"]["miou"] < 0.8


def test_outputs_selection_and_task_override(zoo, cli, tmp_path):
    ckpt = zoo["tinyseg"]
    onnx_path = tmp_path / "out_only.onnx"
    result = cli("onnx", ckpt, *_arch(zoo, "TinySeg"), "--outputs", "out", "--task", "out=dense", "-o", onnx_path, "--json", "-q")
    v = _passes_every_output(result, {"out"})
    assert v["outputs"]["out"]["task"] == "dense" and v["outputs"]["out"]["pixel_agreement"] is None
    report = result.json()
    assert report["model"]["dropped_outputs"] == ["aux"]
    from exporter.runners import open_runner

    with open_runner(onnx_path) as runner:
        assert runner.output_names == ["out"]

    info = cli("inspect", ckpt, *_arch(zoo, "TinySeg"), "--outputs", "out", "--json")
    assert info.exit_code == 0, info
    assert info.json()["outputs"] == [{"name": "out", "task": "segment", "classes": 5, "shape": [5, 32, 32]}]
    assert info.json()["dropped_outputs"] == ["aux"]
    table = cli("inspect", ckpt, *_arch(zoo, "TinySeg"))
    assert "out segment (Nx5x32x32), aux segment (Nx5x32x32)" in table.stdout
    unknown = cli("onnx", ckpt, *_arch(zoo, "TinySeg"), "--outputs", "mask", "-o", tmp_path / "x.onnx")
    assert (
        unknown.exit_code == 2
        and "--outputs names mask, which the model does not return (its outputs: out, aux)" in unknown.stderr
    )
    assert not (tmp_path / "x.onnx").exists()
    bad_task = cli("onnx", ckpt, *_arch(zoo, "TinySeg"), "--task", "out=depth", "-o", tmp_path / "x.onnx")
    assert bad_task.exit_code == 2 and "'depth' is not one of classify, segment, dense, regress" in bad_task.stderr


def test_detection_post_processing_is_refused_in_one_sentence(zoo, cli, tmp_path):
    result = cli("onnx", zoo["detector"], *_arch(zoo, "Detector"), "-o", tmp_path / "det.onnx")
    assert result.exit_code == 2, result
    assert "per-image detections after post-processing" in result.stderr and "export the head's tensors" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "det.onnx").exists()


def test_torchvision_detector_is_refused_before_any_export(cli, tmp_path):
    import torch
    import torchvision

    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    torch.save(model.state_dict(), tmp_path / "ssdlite.pt")
    result = cli(
        "onnx", tmp_path / "ssdlite.pt", "--arch", "torchvision.models.detection:ssdlite320_mobilenet_v3_large",
        "--arch-kwargs", '{"num_classes": 3, "weights_backbone": null}', "--input-shape", "3,320,320",
        "-o", tmp_path / "ssd.onnx",
    )  # fmt: skip
    assert result.exit_code == 2, result
    assert "per-image detections after post-processing" in result.stderr
    assert len(result.stderr) < 2000  # one sentence, not a graph dump
    assert not (tmp_path / "ssd.onnx").exists()


def test_ill_conditioned_model_passes_by_its_own_noise_and_a_weight_change_is_still_caught(zoo, cli, tmp_path):
    import torch

    ckpt = zoo["illconditioned"]
    onnx_path = tmp_path / "ill.onnx"
    result = cli("onnx", ckpt, *_arch(zoo, "IllConditioned"), "-o", onnx_path, "--json", "-q")
    v = _verdict(result)
    assert verified(v), result
    row = v["outputs"]["logits"]
    assert row["max_rel_err"] > 1e-4  # the fixed fp32 rule alone would have refused a correct export
    assert row["decided_by"] == "noise" and row["noise_rel_err"] > 1e-4
    assert row["max_rel_err"] <= 4 * row["noise_rel_err"]

    state = torch.load(ckpt)
    state["conv.weight"][0, 0, 0, 0] += 1e-3
    torch.save(state, tmp_path / "moved.pt")
    moved = cli("verify", onnx_path, "--checkpoint", tmp_path / "moved.pt", *_arch(zoo, "IllConditioned"), "--json")
    assert moved.exit_code == 1, moved
    bad = _verdict(moved)["outputs"]["logits"]
    assert bad["status"] == "fail" and bad["max_rel_err"] > 4 * bad["noise_rel_err"]


def test_well_conditioned_model_keeps_the_fixed_rule(zoo, cli, tmp_path):
    """No noise measurement, no wider rule, for a model whose fp32 and fp64 agree."""
    v = _passes_every_output(
        cli("onnx", zoo["tinyseg"], *_arch(zoo, "TinySeg"), "-o", tmp_path / "s.onnx", "--json", "-q"), {"out", "aux"}
    )
    assert all(row["noise_rel_err"] is None and "decided_by" not in row for row in v["outputs"].values())


def test_recipe_model_outputs_and_task(zoo, cli, tmp_path):
    """`model.outputs` / `model.task` in a recipe do what --outputs / --task do on a verb."""
    recipe = tmp_path / "seg.yaml"
    recipe.write_text(
        "name: seg\n"
        f"model: {{arch: '{zoo['folder'] / 'heads.py'}:TinySeg', input_shape: [3, 32, 32], "
        "outputs: [out], task: {out: segment}}\n"
        f"calibration: {{data: '{zoo['calib']}', samples: 64, holdout: 32}}\n"
        "stages: {onnx: {enabled: true}, int8: {enabled: true}}\n"
    )
    result = cli("run", zoo["tinyseg"], "--recipe", recipe, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result
    manifest = result.json()["manifest"]
    assert [o["name"] for o in manifest["model"]["outputs"]] == ["out"] and manifest["model"]["dropped_outputs"] == ["aux"]
    for stage in ("onnx", "int8"):
        v = manifest["stages"][stage]["verification"]
        assert verified(v) and list(v["outputs"]) == ["out"] and v["outputs"]["out"]["task"] == "segment"


def test_tensorrt_kit_lists_every_output(zoo, cli, tmp_path):
    onnx_path = tmp_path / "head.onnx"
    assert cli("onnx", zoo["rawhead"], *_arch(zoo, "RawHead"), "-o", onnx_path, "-q").exit_code == 0
    result = cli("tensorrt", onnx_path, "--emit-script", tmp_path / "kit", "-q")
    assert result.exit_code in (0, 3), result
    sidecar = json.loads((tmp_path / "kit" / "head.engine.build.json").read_text())
    assert sidecar["outputs"] == ["0", "1"]
    assert "outputs, each verified: 0, 1" in (tmp_path / "kit" / "build.sh").read_text()
    assert "returns `0`, `1`" in (tmp_path / "kit" / "README.md").read_text()
