"""`cnnexport debug`, the first divergent layer on failed verification, and `quantize --fallback auto`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import trained_digits_net
from tests.verdicts import verified

ARCH = ("--arch", "tests.small_models:SmallResNet", "--input-shape", "1,32,32", "--mean", "0.5", "--std", "0.5")


@pytest.fixture(scope="module")
def digits_resnets(tmp_path_factory):
    """A small ResNet trained on the digits, and the same function with one BatchNorm channel x400 / next conv /400.

    The outlier model computes what the good one does (ReLU is positively homogeneous), but one
    channel of layer2's first activation now spans ~400x the others: per-tensor uint8
    activations crush the rest, and plain INT8 is refused.
    """
    import torch

    from exporter import architectures
    from exporter.inputs import digits_arrays
    from tests.small_models import SmallResNet

    folder = tmp_path_factory.mktemp("debug_models")
    train_x, _, _, _ = digits_arrays(architectures.get("lenet5").spec(10))
    shutil.copy(trained_digits_net(tmp_path_factory, "resnet"), folder / "good.pt")  # tests/conftest.py
    model = SmallResNet()
    model.load_state_dict(torch.load(folder / "good.pt", weights_only=True))
    model.eval()
    reference = model(torch.from_numpy(train_x[:64])).detach()
    with torch.no_grad():
        model.layer2.bn1.weight[3] *= 400
        model.layer2.bn1.bias[3] *= 400
        model.layer2.conv2.weight[:, 3] /= 400
    assert torch.allclose(model(torch.from_numpy(train_x[:64])), reference, atol=1e-3)  # the same function
    torch.save(model.state_dict(), folder / "outlier.pt")
    return folder


def test_a_weight_changed_inside_one_conv_is_reported_as_that_module(cli, tmp_path):
    import onnx
    import torch

    from tests.conftest import build_model

    model = build_model("resnet18", 10)
    ckpt = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), ckpt)
    assert cli("onnx", ckpt, "--arch", "resnet18", "--input-shape", "3,64,64").exit_code == 0
    good = cli("debug", tmp_path / "resnet18.onnx", "--checkpoint", ckpt, "--arch", "resnet18", "--json")
    assert good.exit_code == 0, good
    assert good.json()["first_divergent"] is None and len(good.json()["layers"]) == 21  # 20 convs + fc
    assert all(layer["status"] == "pass" for layer in good.json()["layers"])

    broken = onnx.load(str(tmp_path / "resnet18.onnx"))
    for init in broken.graph.initializer:
        if init.name == "layer2.0.conv1.weight":
            w = onnx.numpy_helper.to_array(init).copy()
            w[5] *= -3.0
            init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    r = cli("debug", tmp_path / "broken.onnx", "--checkpoint", ckpt, "--arch", "resnet18", "--json")
    assert r.exit_code == 1, r
    first = r.json()["first_divergent"]
    assert first["module"] == "layer2.0.conv1" and first["op"] == "Conv"
    layers = r.json()["layers"]
    assert all(layer["status"] == "pass" for layer in layers[: first["index"]])  # its inputs were within the rule
    v = cli("verify", tmp_path / "broken.onnx", "--checkpoint", ckpt, "--arch", "resnet18", "--input-shape", "3,64,64")
    assert v.exit_code == 1 and "first divergent layer: layer2.0.conv1" in v.stderr, v
    e = cli(
        "verify", tmp_path / "broken.onnx", "--checkpoint", ckpt, "--arch", "resnet18", "--input-shape", "3,64,64", "--explain",
        "--json",
    )  # fmt: skip
    assert e.exit_code == 1 and e.json()["explain"]["first_divergent"]["module"] == "layer2.0.conv1"


def test_plain_int8_of_the_outlier_model_is_refused_naming_the_outlier_layer(cli, digits_resnets, tmp_path):
    good = cli("quantize", digits_resnets / "good.pt", *ARCH, "--calib", "digits", "-o", tmp_path / "good.int8.onnx", "--json")
    assert good.exit_code == 0, good
    g = cli(
        "debug", tmp_path / "good.int8.onnx", "--checkpoint", digits_resnets / "good.pt", *ARCH[:2], "--images", "digits",
        "--samples", "64", "--json",
    )  # fmt: skip
    assert g.exit_code == 0 and g.json()["first_divergent"] is None, g  # a good artifact has no divergent layer
    assert g.json()["precision"] == "int8"

    r = cli("quantize", digits_resnets / "outlier.pt", *ARCH, "--calib", "digits", "-o", tmp_path / "o.int8.onnx", "--json")
    assert r.exit_code == 1, r
    v = r.json()["artifacts"][-1]["verification"]
    assert v["cosine"] < 0.98
    first = v["first_divergent"]
    assert first["module"] == "layer2.conv1" and "layer2.bn1" in first["output_of"], first
    assert "--equalize" in first["advice"] and first["node"] in first["advice"]
    assert "first divergent layer: layer2.conv1" in r.stderr and "cnnexport debug" in r.stderr


def test_fallback_greedy_rescues_the_outlier_with_a_few_layers_in_float(cli, digits_resnets, tmp_path):
    out = tmp_path / "o.int8.onnx"
    r = cli(
        "quantize", digits_resnets / "outlier.pt", *ARCH, "--calib", "digits", "--fallback", "greedy", "--eval", "digits",
        "--max-drop", "1", "-o", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][-1]
    v, fallback = art["verification"], art["details"]["float_fallback"]
    assert verified(v) and v["cosine"] >= 0.98
    assert 1 <= fallback["kept_in_float"] <= 3 and fallback["share"] <= 0.25
    assert {layer["module"] for layer in fallback["layers"]} >= {"layer2.conv1"}
    assert all(layer["why"] for layer in fallback["layers"])
    assert 0 < fallback["speed"]["speed_ratio"] and fallback["speed"]["all_int8_images_per_s"] > 0
    evaluation = art["details"]["eval"]["results"]
    assert evaluation[out.name]["top1_drop_points"] <= 1.0
    assert out.exists() and not list(tmp_path.glob(".cnnexport-fallback-*"))  # attempts are cleaned up


SIX = ("--arch", "tests.small_models:SixLayerCNN", "--input-shape", "1,32,32", "--mean", "0.5", "--std", "0.5")


@pytest.fixture(scope="module")
def six_layer_outlier(tmp_path_factory):
    """A six-layer digits CNN with one BatchNorm channel x400 and the next conv /400 (the same function).

    Rescuing it needs two layers in float (the conv whose output the channel dominates and the conv
    reading it): more than 25% of six, the share that used to be the only budget.
    """
    import torch

    from exporter import architectures
    from exporter.demo import train
    from exporter.inputs import digits_arrays
    from tests.small_models import SixLayerCNN

    folder = tmp_path_factory.mktemp("six_layer")
    train_x, train_y, _, _ = digits_arrays(architectures.get("lenet5").spec(10))
    torch.manual_seed(0)
    model, _ = train(SixLayerCNN(), train_x, train_y, epochs=6)
    reference = model(torch.from_numpy(train_x[:64])).detach()
    with torch.no_grad():
        bn, reader = model.features[5], model.features[8]
        bn.weight[3] *= 400
        bn.bias[3] *= 400
        reader.weight[:, 3] /= 400
    assert torch.allclose(model(torch.from_numpy(train_x[:64])), reference, atol=1e-3)
    torch.save(model.state_dict(), folder / "outlier.pt")
    return folder / "outlier.pt"


@pytest.mark.full
def test_fallback_greedy_rescues_a_six_layer_net_within_the_default_budget(cli, six_layer_outlier, tmp_path):
    out = tmp_path / "six.int8.onnx"
    plain = cli("quantize", six_layer_outlier, *SIX, "--calib", "digits", "-o", tmp_path / "plain.int8.onnx", "--json")
    assert plain.exit_code == 1 and plain.json()["artifacts"][-1]["verification"]["cosine"] < 0.5, plain
    r = cli(
        "quantize", six_layer_outlier, *SIX, "--calib", "digits", "--fallback", "greedy", "--eval", "digits", "--max-drop", "1",
        "-o", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][-1]
    v, fallback = art["verification"], art["details"]["float_fallback"]
    assert verified(v) and v["cosine"] >= 0.98
    assert fallback["weighted_layers"] == 6 and fallback["budget"] == 2 and "default budget" in fallback["budget_from"]
    assert fallback["kept_in_float"] == 2, fallback
    assert {layer["module"] for layer in fallback["layers"]} == {"features.4", "features.8"}
    assert [t["status"] for t in fallback["tries"]] == ["fail", "pass"] and fallback["tries"][0]["cosine"] < 0.5
    assert art["details"]["eval"]["results"][out.name]["top1_drop_points"] <= 1.0
    assert 0 < fallback["speed"]["speed_ratio"]
    assert out.exists() and not list(tmp_path.glob(".cnnexport-fallback-*"))


def test_a_budget_below_what_passing_needs_is_tried_then_refused_with_the_number(cli, six_layer_outlier, tmp_path):
    out = tmp_path / "six.int8.onnx"
    r = cli(
        "quantize", six_layer_outlier, *SIX, "--calib", "digits", "--fallback", "greedy", "--max-float-layers", "1", "-o", out,
        "--json",
    )  # fmt: skip
    assert r.exit_code == 1, r
    art = r.json()["artifacts"][-1]
    fallback = art["details"]["float_fallback"]
    assert art["verification"]["status"] == "fail" and fallback["installed"] is False and fallback["budget"] == 1
    assert [t["kept_in_float"] for t in fallback["tries"]] == [0, 2] and fallback["tries"][-1]["status"] == "pass"
    assert "passing needs 2 layers in float, more than the budget of 1" in r.stderr
    assert "--max-float-layers 2" in r.stderr and "best: cosine 0.99" in r.stderr
    assert "--equalize is worth a try: features.4" in r.stderr  # the table showed a crushed channel
    assert not out.exists() and not list(tmp_path.glob(".cnnexport-fallback-*"))


def test_a_share_budget_stops_the_ten_layer_resnet_after_trying(cli, digits_resnets, tmp_path):
    out = tmp_path / "o.int8.onnx"
    r = cli(
        "quantize", digits_resnets / "outlier.pt", *ARCH, "--calib", "digits", "--fallback", "greedy", "--max-float-share", "0.1",
        "-o", out,
    )  # fmt: skip
    assert r.exit_code == 1 and "--fallback greedy stopped" in r.stderr, r
    assert "budget 1 from --max-float-share 0.1 (1 of the 10)" in r.stderr and "round(s) with 0, " in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--max-float-layers", "3"), ("--max-float-share", "0.5"), ("--max-drop", "1")])
def test_budget_flags_without_fallback_auto_are_refused(cli, tmp_path, flag, value):
    r = cli("quantize", tmp_path / "missing.onnx", "--calib", "digits", flag, value)
    assert r.exit_code == 2 and f"{flag} only applies with --fallback auto" in r.stderr, r


def test_the_float_budget():
    from exporter.rescue.search import float_budget

    assert [float_budget(n, None, None)[0] for n in (1, 6, 10, 40)] == [1, 2, 2, 10]
    assert float_budget(10, 3, None) == (3, "--max-float-layers 3")
    assert float_budget(10, None, 0.5)[0] == 5 and float_budget(10, 3, 0.5)[0] == 3 and float_budget(10, 8, 0.5)[0] == 5
    assert float_budget(10, 0, None)[0] == 0


def test_a_recipe_budget_without_fallback_names_the_key():
    from exporter import recipe
    from exporter.errors import BadInputError

    data = {"model": {"arch": "lenet5"}, "stages": {"int8": {"enabled": True, "max_float_layers": 2}}}
    with pytest.raises(BadInputError, match=r"stages\.int8.*--max-float-layers only applies with --fallback auto"):
        recipe.validate(data)
    ok = recipe.validate({**data, "stages": {"int8": {"enabled": True, "fallback": "auto", "max_float_layers": 2}}})
    assert ok.stages.int8.max_float_layers == 2


def test_the_greedy_fallback_needs_the_pytorch_reference(cli, digits_resnets, tmp_path):
    assert cli("onnx", digits_resnets / "good.pt", *ARCH, "-o", tmp_path / "g.onnx").exit_code == 0
    r = cli("quantize", tmp_path / "g.onnx", "--calib", "digits", "--fallback", "greedy")
    assert r.exit_code == 2 and "--checkpoint" in r.stderr, r


def test_debug_plot_and_refusals(cli, digits_resnets, tmp_path):
    assert cli("onnx", digits_resnets / "good.pt", *ARCH, "-o", tmp_path / "g.onnx").exit_code == 0
    png = tmp_path / "depth.png"
    r = cli("debug", tmp_path / "g.onnx", "--checkpoint", digits_resnets / "good.pt", *ARCH[:2], "--plot", png)
    assert r.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r
    assert "layer by layer" in r.stdout and "no layer exceeds the rule" in r.stdout
    bad = cli("debug", digits_resnets / "good.pt", "--checkpoint", digits_resnets / "good.pt", *ARCH[:2])
    assert bad.exit_code == 2 and "ONNX" in bad.stderr and "Traceback" not in bad.stderr, bad
    assert (
        cli("debug", tmp_path / "g.onnx", "--checkpoint", digits_resnets / "good.pt", *ARCH[:2], "--precision", "fp8").exit_code
        == 2
    )


def test_layer_pairing_follows_folded_batchnorm_and_functional_relu(digits_resnets, tmp_path):
    """Unit: the ONNX Conv (BatchNorm folded in) pairs with the BatchNorm's output; int8 readers see relu(bn)."""
    from exporter import export_artifact, load_checkpoint
    from exporter.rescue.debug import layer_table
    from exporter.verify import tolerance_for

    loaded = load_checkpoint(
        digits_resnets / "good.pt",
        arch="tests.small_models:SmallResNet",
        spec_overrides={"input_shape": (1, 32, 32), "mean": (0.5,), "std": (0.5,)},
    )
    onnx = export_artifact("onnx", loaded, tmp_path / "g.onnx").path
    batch = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    table = {layer.module: layer for layer in layer_table(onnx, loaded.module, batch, tolerance_for("fp32"))}
    assert table["layer1.conv1"].output_of == "layer1.bn1" and table["fc"].op == "Gemm"
    assert table["layer2.conv2"].upstream == (table["layer2.conv1"].node,)  # it reads layer2.conv1's output
    assert all(layer.max_rel_err < 1e-4 for layer in table.values())


def test_equalize_rescues_the_outlier_with_no_layer_in_float(cli, digits_resnets, tmp_path):
    r = cli(
        "quantize", digits_resnets / "outlier.pt", *ARCH, "--calib", "digits", "--equalize", "--fallback", "greedy",
        "-o", tmp_path / "eq.int8.onnx", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][-1]
    assert art["verification"]["cosine"] >= 0.98 and art["details"]["equalization"]["pairs"] >= 1
    assert art["details"]["float_fallback"]["kept_in_float"] == 0
