"""Cross-layer equalization before INT8 (`cnnexport quantize --equalize`, stages.int8.equalize)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.verdicts import verified

SCALE = 400.0  # the outlier: one BatchNorm channel x400, the next conv's input channel /400
SMALL = [
    "--arch", "tests.small_models:SmallResNet", "--arch-kwargs", '{"width": 8}', "--input-shape", "1,32,32", "--mean", "0.5",
    "--std", "0.5",
]  # fmt: skip


# ----------------------------------------------------------------- unit: equalize() on hand-built graphs


def _graph(act: str = "Relu", group2: int = 1, batchnorm: bool = False):
    """x -> Conv(8, one output channel x400) -> [BatchNorm] -> act -> Conv(group2) -> Relu -> pool -> Flatten -> Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 8
    w1 = rng.normal(size=(c, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=c).astype(np.float32)
    w1[2] *= SCALE
    b1[2] *= SCALE
    inits = {
        "w1": w1,
        "b1": b1,
        "w2": rng.normal(size=(c, c // group2, 3, 3)).astype(np.float32),
        "fc": rng.normal(size=(5, c)).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4)]
    t = "c1"
    if batchnorm:
        inits.update(g=rng.uniform(0.5, 2, c), be=rng.normal(size=c), m=rng.normal(size=c), v=rng.uniform(0.5, 2, c))
        nodes.append(helper.make_node("BatchNormalization", [t, "g", "be", "m", "v"], ["bn"]))
        t = "bn"
    if act == "Relu6":
        inits.update(lo=np.array(0.0), hi=np.array(6.0))
        nodes.append(helper.make_node("Clip", [t, "lo", "hi"], ["a1"]))
    elif act in ("SiLU", "Hardswish"):  # x * gate(x), as torch exports them
        gate = "Sigmoid" if act == "SiLU" else "HardSigmoid"
        nodes += [helper.make_node(gate, [t], ["gate"]), helper.make_node("Mul", [t, "gate"], ["a1"])]
    else:
        nodes.append(helper.make_node(act, [t], ["a1"]))
    nodes += [
        helper.make_node("Conv", ["a1", "w2"], ["c2"], pads=[1] * 4, group=group2),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pair",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _spread(model, name):
    from onnx import numpy_helper

    from exporter.rescue.equalize import _first_ranges, range_spread

    w = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)
    return range_spread(_first_ranges(w))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"batchnorm": True}, {"group2": 8}, {"group2": 2}, {"act": "LeakyRelu"}],
    ids=["relu", "batchnorm-folded", "depthwise", "grouped", "leaky-relu"],
)
def test_equalize_keeps_the_function_and_evens_out_the_channel_ranges(kwargs):
    from exporter.rescue.equalize import equalize

    model = _graph(**kwargs)
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)
    equalized, report = equalize(model)
    before, after = _run(model, x), _run(equalized, x)
    assert np.abs(after - before).max() <= 1e-5 * (before.max() - before.min())
    assert report["pairs"] == 2 and report["skipped"] == {}  # Conv -> Conv and Conv -> pool -> Flatten -> Gemm
    assert report["batchnorm_folded"] == (1 if kwargs.get("batchnorm") else 0)
    assert not any(n.op_type == "BatchNormalization" for n in equalized.graph.node)
    assert report["max_scale"] > 10 and report["sweeps"] >= 2
    assert _spread(model, "w1") > 300 and _spread(equalized, "w1") < _spread(model, "w1") / 10
    assert report["channel_range_spread"]["after"] < report["channel_range_spread"]["before"] / 10
    assert _spread(model, "w1") == pytest.approx(_spread(_graph(**kwargs), "w1"))  # the input model is left alone


def test_relu6_pairs_are_skipped_and_counted():
    from exporter.rescue.equalize import equalize

    model = _graph(act="Relu6")
    equalized, report = equalize(model)
    assert report["pairs"] == 1  # only Conv2 -> Relu -> pool -> Gemm
    assert report["skipped"] == {"Clip (Relu6) between: not positively homogeneous": 1} and report["pairs_skipped"] == 1
    assert _spread(equalized, "w1") == pytest.approx(_spread(model, "w1"))  # the Clip pair's first conv is untouched


@pytest.mark.parametrize("act", ["Sigmoid", "SiLU", "Hardswish"])
def test_pairs_through_other_activations_are_skipped(act):
    from exporter.rescue.equalize import equalize

    _, report = equalize(_graph(act=act))
    assert report["pairs"] == 1 and report["skipped"] == {f"{act} between: not positively homogeneous": 1}


# ----------------------------------------------------------------- the outlier example, through the CLI


@pytest.fixture(scope="module")
def outlier_ckpt(tmp_path_factory):
    """SmallResNet trained briefly on the digits; then one channel of layer1.bn1 x400 and layer1.conv2's input channel /400.

    Through the ReLU between them (positively homogeneous) the function is unchanged, but that channel's
    activations are 400x the others'.
    """
    import torch

    from exporter import architectures
    from exporter.demo import train
    from exporter.inputs import digits_arrays
    from tests.small_models import SmallResNet

    train_x, train_y, _, _ = digits_arrays(architectures.get("lenet5").spec(10))
    torch.manual_seed(0)
    model, _ = train(SmallResNet(width=8), train_x, train_y, epochs=3)
    x = torch.from_numpy(train_x[:64])
    with torch.no_grad():
        expected = model(x)
        model.layer1.bn1.weight[3] *= SCALE
        model.layer1.bn1.bias[3] *= SCALE
        model.layer1.conv2.weight[:, 3] /= SCALE
        assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    path = tmp_path_factory.mktemp("outlier") / "outlier.pt"
    torch.save(model.state_dict(), path)
    return path


def _heldout(artifact: dict) -> dict:
    return next(c for c in artifact["verification"]["checks"] if c["inputs"].startswith("held-out"))


def test_an_outlier_channel_fails_plain_int8_and_passes_with_equalize(cli, outlier_ckpt, tmp_path, record_property):
    plain = cli("quantize", outlier_ckpt, *SMALL, "--calib", "digits", "-o", tmp_path / "plain.int8.onnx", "--json")
    assert plain.exit_code == 1, plain
    bad = _heldout(plain.json()["artifacts"][-1])
    assert bad["status"] == "fail" and (bad["cosine"] < 0.98 or bad["top1_agreement"] < 0.9)
    assert "equalization" not in plain.json()["artifacts"][-1]["details"]

    fixed = cli("quantize", outlier_ckpt, *SMALL, "--calib", "digits", "--equalize", "-o", tmp_path / "eq.int8.onnx", "--json")
    assert fixed.exit_code == 0, fixed
    art = fixed.json()["artifacts"][-1]
    good = _heldout(art)
    assert verified(art["verification"]) and good["cosine"] >= 0.98
    eq = art["details"]["equalization"]
    assert eq["pairs"] >= 1 and eq["max_scale"] > 100  # the x400 channel is scaled back
    assert eq["fp32_max_err_over_range"] <= 1e-4
    assert (tmp_path / "eq.int8.onnx").is_file() and not (tmp_path / "plain.int8.onnx").exists()
    record_property("heldout_cosine", {"plain": bad["cosine"], "equalized": good["cosine"]})
    print(
        f"held-out cosine: plain int8 {bad['cosine']:.4f} (top-1 {bad['top1_agreement']:.3f}), "
        f"--equalize {good['cosine']:.4f} (top-1 {good['top1_agreement']:.3f})"
    )


def test_equalization_that_changes_the_function_is_refused(cli, outlier_ckpt, tmp_path, monkeypatch):
    """The fp32 check is real: a wrong scale (here: the second layer left unscaled) is an error and nothing is written."""
    import exporter.rescue.equalize as eq

    real = eq._second_ranges

    def forgetful(w2, kind, n):
        ranges, view, shape = real(w2, kind, n)
        return ranges, view.copy(), shape  # the scale multiplies a copy: W2 never changes

    monkeypatch.setattr(eq, "_second_ranges", forgetful)
    r = cli("quantize", outlier_ckpt, *SMALL, "--calib", "digits", "--equalize", "-o", tmp_path / "x.int8.onnx", "--json")
    assert r.exit_code == 2, r
    assert "equalization changed the fp32 function" in r.stderr and "was not applied" in r.stderr
    assert not (tmp_path / "x.int8.onnx").exists()


def test_recipe_key_stages_int8_equalize(cli, outlier_ckpt, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model": {
                    "arch": "tests.small_models:SmallResNet",
                    "arch_kwargs": {"width": 8},
                    "input_shape": [1, 32, 32],
                    "mean": [0.5],
                    "std": [0.5],
                },
                "calibration": {"data": "digits"},
                "stages": {"int8": {"enabled": True}},
            }
        )
    )
    r = cli("run", outlier_ckpt, "--recipe", recipe, "--set", "stages.int8.equalize=true", "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r
    int8 = r.json()["manifest"]["stages"]["int8"]
    assert int8["status"] == "pass" and int8["details"]["equalization"]["pairs"] >= 1


# ----------------------------------------------------------------- the torch twin: ExecuTorch and LiteRT --equalize


def test_torch_equalization_finds_the_pairs_keeps_the_function_and_scales_the_outlier_back(outlier_ckpt):
    import torch

    from exporter.rescue.torch_equalize import equalize_module
    from tests.small_models import SmallResNet

    model = SmallResNet(width=8).eval()
    model.load_state_dict(torch.load(outlier_ckpt))
    x = torch.randn(16, 1, 32, 32)
    equalized, report = equalize_module(model, x[:2])
    assert report["equalized"][0] == "layer1.conv1 -> layer1.conv2" and report["max_scale"] > 100
    assert report["skipped"].get("through add", 0) >= 1  # a residual add is never scaled through
    with torch.no_grad():
        a, b = model(x), equalized(x)
    assert float((a - b).abs().max() / (a.max() - a.min())) < 1e-5
    # the outlier channel of layer1.bn1 is scaled back; the original module is untouched
    assert float(equalized.layer1.bn1.weight.abs().max()) < float(model.layer1.bn1.weight.abs().max()) / 20


@pytest.mark.parametrize("act", ["ReLU6", "Hardswish", "SiLU"])
def test_torch_equalization_skips_activations_that_are_not_homogeneous(act):
    import torch

    from exporter.rescue.torch_equalize import equalize_module

    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), getattr(nn, act)(), nn.Conv2d(8, 4, 3)).eval()
    _, report = equalize_module(model, torch.randn(2, 3, 16, 16))
    assert report["pairs"] == 0 and report["pairs_skipped"] == 2, report  # conv0 through act; conv3 has no layer after
    relu = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3)).eval()
    assert equalize_module(relu, torch.randn(2, 3, 16, 16))[1]["equalized"] == ["0 -> 4"]


def _equalized_int8(cli, verb: str, ckpt, out, *extra):
    r = cli(verb, ckpt, *SMALL, "--precision", "int8", "--calib", "digits", *extra, "-o", out, "--json")
    return r, (r.json()["artifacts"][-1] if r.stdout.startswith("{") else None)


def test_an_executorch_int8_program_with_an_outlier_channel_passes_with_equalize(cli, outlier_ckpt, tmp_path):
    """Plain, the x400 channel breaks it (held-out cosine -0.63 measured); equalized it passes in ExecuTorch's runtime."""
    pytest.importorskip("executorch", reason="executorch is not installed (scripts/setup.sh installs it)")
    r, art = _equalized_int8(cli, "executorch", outlier_ckpt, tmp_path / "eq.pte", "--equalize")
    assert r.exit_code == 0, r
    assert verified(art["verification"]) and _heldout(art)["cosine"] >= 0.98
    eq = art["details"]["equalization"]
    assert eq["equalized"][0] == "layer1.conv1 -> layer1.conv2" and eq["max_scale"] > 100
    assert eq["fp32_max_err_over_range"] <= 1e-4
    wrong = cli("executorch", outlier_ckpt, *SMALL, "--equalize", "-o", tmp_path / "fp32.pte")
    assert wrong.exit_code == 2 and "--equalize prepares a model for int8: add --precision int8" in wrong.stderr, wrong


@pytest.mark.full
def test_executorch_and_litert_fail_plain_and_pass_equalized(cli, outlier_ckpt, tmp_path):
    """Full tier (required partner: the ExecuTorch test above): the plain refusal on both, and LiteRT equalized."""
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed (scripts/setup.sh installs it)")
    pytest.importorskip("executorch", reason="executorch is not installed (scripts/setup.sh installs it)")
    for verb, suffix in (("executorch", ".pte"), ("litert", ".tflite")):
        plain, art = _equalized_int8(cli, verb, outlier_ckpt, tmp_path / f"plain{suffix}")
        assert plain.exit_code == 1 and _heldout(art)["status"] == "fail", plain
        assert not (tmp_path / f"plain{suffix}").exists()
    fixed, art = _equalized_int8(cli, "litert", outlier_ckpt, tmp_path / "eq.tflite", "--equalize")
    assert fixed.exit_code == 0, fixed
    assert _heldout(art)["cosine"] >= 0.98 and art["details"]["equalization"]["max_scale"] > 100
