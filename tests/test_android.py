"""`cnnexport executorch` and `cnnexport litert`: Android artifacts verified by their own runtimes.

Models are trained briefly on the digits (real logits, not random-init ~0 outputs): LeNet-5,
whose flatten fixes a LiteRT graph at batch 1, and a small ResNet, whose global pooling lets
the LiteRT interpreter resize its input.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import run_cli as _run
from tests.conftest import trained_digits_net
from tests.verdicts import verified

pytest.importorskip("executorch.runtime", reason="ExecuTorch is not installed: pip install 'cnnexport[executorch]'")
pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is not installed: pip install 'cnnexport[litert]'")

SMALL_RESNET = "tests.small_models:SmallResNet"
DIGITS_SPEC = ("--input-shape", "1,32,32", "--mean", "0.5", "--std", "0.5")


@pytest.fixture(scope="module")
def digits_nets(tmp_path_factory) -> dict:
    """LeNet-5 (a training dict with its arch) and SmallResNet (a bare state_dict), trained on the digits (tests/conftest.py)."""
    folder = tmp_path_factory.mktemp("android_nets")
    for name in ("lenet5", "resnet"):
        shutil.copy(trained_digits_net(tmp_path_factory, name), folder / f"{name}.pt")
    return {"lenet5": folder / "lenet5.pt", "resnet": folder / "resnet.pt"}


@pytest.fixture(scope="module")
def built(digits_nets, tmp_path_factory) -> dict:
    """The fp32 programs the tests share: LeNet-5 as .pte and .tflite, SmallResNet as .pte and .tflite."""
    folder = tmp_path_factory.mktemp("android_built")
    out = {"folder": folder}
    for net in ("lenet5", "resnet"):
        ckpt = _copy(digits_nets[net], folder)
        extra = ("--arch", SMALL_RESNET, *DIGITS_SPEC) if net == "resnet" else ()
        for verb in ("executorch", "litert"):
            out[f"{net}.{verb}"] = _last(_run(verb, ckpt, *extra, "--json"))
    return out


def _copy(path, tmp_path):
    target = tmp_path / path.name
    shutil.copy(path, target)
    return target


def _last(r) -> dict:
    assert r.exit_code == 0, r
    return r.json()["artifacts"][-1]


def _batches(verification: dict) -> set[int]:
    return set(verification["batch_sizes"])


def _negate_class_weights(artifact, checkpoint) -> None:
    """Negate the classifier weights of class 0 inside the artifact's bytes (both formats store them as they are)."""
    import torch

    state = torch.load(checkpoint, weights_only=True)
    state = state.get("model_state_dict", state)
    weight = state["output.weight"][0].numpy().astype(np.float32).tobytes()
    data = bytearray(artifact.read_bytes())
    at = data.find(weight)
    assert at > 0, "the classifier weights are not stored as they are"
    data[at : at + len(weight)] = (-np.frombuffer(weight, np.float32)).tobytes()
    artifact.write_bytes(bytes(data))


# ----------------------------------------------------------------- ExecuTorch


def test_executorch_program_is_verified_by_its_runtime_over_its_dynamic_batch_range(built):
    from exporter.targets.executorch.runner import ExecuTorchRunner

    art, folder = built["lenet5.executorch"], built["folder"]
    v = art["verification"]
    assert art["kind"] == "executorch" and verified(v) and v["precision"] == "fp32", v
    assert {1, 4, 32} <= _batches(v) and v["max_rel_err"] <= 1e-4 and v["cosine"] >= 0.99999
    d = art["details"]
    assert d["batch"] == [1, 32] and d["backend"] == "xnnpack"
    assert d["delegated_ops"]["aten_convolution_default"] == 2 and d["delegated_ops"]["aten_linear_default"] == 3
    assert "aten_convolution_default" not in d["portable_ops"]
    report = json.loads((folder / "lenet5.pte.report.json").read_text())
    assert "executorch" in report["versions"]
    with ExecuTorchRunner(folder / "lenet5.pte") as runner:
        assert runner.batch_range == (1, 32) and runner.batch_dim == "batch" and runner.metadata["arch"] == "lenet5"
        batch = np.random.default_rng(0).standard_normal((40, 1, 32, 32)).astype(np.float32)
        assert runner.infer(batch)["logits"].shape == (40, 10)  # past MAX: run in chunks of 32


def test_executorch_static_batch_is_planned_for_that_size_and_verified_there(cli, digits_nets, tmp_path):
    from exporter.targets.executorch.runner import ExecuTorchRunner

    ckpt = _copy(digits_nets["lenet5"], tmp_path)
    art = _last(cli("executorch", ckpt, "--static-batch", "4", "-o", tmp_path / "b4.pte", "--json"))
    assert verified(art["verification"]) and _batches(art["verification"]) == {4}, art["verification"]
    with ExecuTorchRunner(tmp_path / "b4.pte") as runner:
        assert runner.batch_range == (4, 4) and runner.batch_dim == 4 and runner.requested_fixed_batch == 4


def test_executorch_int8_passes_the_int8_rule_on_held_out_digits_at_under_35_percent_of_the_fp32_size(
    cli, digits_nets, built, tmp_path
):
    ckpt = _copy(digits_nets["resnet"], tmp_path)
    fp32 = built["resnet.executorch"]
    int8 = _last(
        cli("executorch", ckpt, "--arch", SMALL_RESNET, *DIGITS_SPEC, "--precision", "int8", "--calib", "digits", "--json")
    )
    v = int8["verification"]
    assert int8["path"].endswith("resnet.int8.pte") and verified(v) and v["precision"] == "int8", v
    assert any(c["inputs"].startswith("held-out (64") and c["judged"] for c in v["checks"]), v["checks"]
    assert 0.98 <= v["cosine"] < 0.99999  # int8 arithmetic: close, and not the fp32 program again
    assert int8["details"]["calibration_samples"] == 256 and int8["details"]["samples_heldout"] == 64
    assert "quantized_decomposed_quantize_per_tensor_default" in int8["details"]["delegated_ops"]
    ratio = (tmp_path / "resnet.int8.pte").stat().st_size / (built["folder"] / "resnet.pte").stat().st_size
    assert ratio < 0.35, ratio
    assert verified(fp32["verification"])


def test_a_lowering_that_fixes_the_batch_is_refused_with_the_static_batch_hint(cli, tmp_path):
    import torch

    from tests.small_models import ChannelShuffleCNN

    torch.manual_seed(0)
    torch.save(ChannelShuffleCNN().state_dict(), tmp_path / "shuffle.pt")
    arch = ("--arch", "tests.small_models:ChannelShuffleCNN", *DIGITS_SPEC)
    r = cli("executorch", tmp_path / "shuffle.pt", *arch)
    assert r.exit_code == 2, r
    assert "lowering fixed the batch at 8" in r.stderr and "--static-batch N" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shuffle.pt"]
    art = _last(cli("executorch", tmp_path / "shuffle.pt", *arch, "--static-batch", "1", "--json"))
    assert verified(art["verification"]) and _batches(art["verification"]) == {1}, art


def test_int8_executorch_needs_calibration_and_the_xnnpack_backend(cli, digits_nets, tmp_path):
    ckpt = _copy(digits_nets["lenet5"], tmp_path)
    r = cli("executorch", ckpt, "--precision", "int8")
    assert r.exit_code == 2 and "needs calibration data" in r.stderr, r
    r = cli("executorch", ckpt, "--precision", "int8", "--calib", "digits", "--backend", "portable")
    assert r.exit_code == 2 and "needs --backend xnnpack" in r.stderr, r
    r = cli("executorch", ckpt, "--batch", "8:1:4")
    assert r.exit_code == 2 and "MIN:OPT:MAX" in r.stderr, r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.pt"]  # nothing written by a refusal


# ----------------------------------------------------------------- LiteRT


def test_litert_model_is_verified_by_the_interpreter_at_batch_1_and_one_sample_at_a_time(built):
    from exporter.targets.litert.runner import LiteRTRunner

    art = built["lenet5.litert"]
    v = art["verification"]
    assert art["kind"] == "litert" and verified(v) and v["precision"] == "fp32" and {1, 4} <= _batches(v), v
    assert v["max_rel_err"] <= 1e-4 and v["cosine"] >= 0.99999
    env = art["details"]["isolated_env"]
    assert env["versions"]["litert-torch"] == "0.10.0" and "litert-torch==0.10.0" in env["requirements"]
    with LiteRTRunner(built["folder"] / "lenet5.tflite") as runner:
        # LeNet-5's flatten fixes the graph at batch 1: the interpreter refuses a resize, so it runs per sample
        assert runner.resizable is False and runner.batch_range == (1, 1) and runner.batch_dim == 1
        assert runner.metadata["arch"] == "lenet5" and runner.infer(np.zeros((3, 1, 32, 32), np.float32))["logits"].shape == (
            3,
            10,
        )


def test_litert_resizes_where_the_graph_allows_and_its_int8_passes_on_held_out_digits_under_35_percent(
    cli, digits_nets, built, tmp_path
):
    import torch
    import torchvision

    from exporter.targets.litert.runner import LiteRTRunner

    # MobileNetV2's graph takes any batch once converted at 1: the interpreter resizes it
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25).state_dict(), tmp_path / "mnv2.pt")
    made = _last(
        cli(
            "litert", tmp_path / "mnv2.pt", "--arch", "mobilenet_v2", "--arch-kwargs", '{"num_classes": 10, "width_mult": 0.25}',
            "--input-shape", "3,32,32", "--json",
        )
    )  # fmt: skip
    assert verified(made["verification"]) and {1, 4} <= _batches(made["verification"])
    with LiteRTRunner(tmp_path / "mnv2.tflite") as runner:
        assert runner.resizable is True and runner.batch_range == (1, None)
        assert runner.infer(np.zeros((6, 3, 32, 32), np.float32))["logits"].shape == (6, 10)

    ckpt = _copy(digits_nets["resnet"], tmp_path)
    fp32 = built["resnet.litert"]
    int8 = _last(cli("litert", ckpt, "--arch", SMALL_RESNET, *DIGITS_SPEC, "--precision", "int8", "--calib", "digits", "--json"))
    v = int8["verification"]
    assert verified(fp32["verification"])
    assert int8["path"].endswith("resnet.int8.tflite") and verified(v) and v["precision"] == "int8", v
    assert any(c["inputs"].startswith("held-out (64") and c["judged"] for c in v["checks"]) and 0.98 <= v["cosine"] < 0.99999
    assert int8["details"]["ranges"] == "min-max over every calibration sample"
    with LiteRTRunner(tmp_path / "resnet.int8.tflite") as runner:
        assert runner._input["dtype"] == np.int8 and runner.declared_precision == "int8"
    ratio = (tmp_path / "resnet.int8.tflite").stat().st_size / (built["folder"] / "resnet.tflite").stat().st_size
    assert ratio < 0.35, ratio


@pytest.mark.full
def test_fp16_litert_is_judged_by_the_fp16_rule_at_about_half_the_size(cli, digits_nets, tmp_path):
    ckpt = _copy(digits_nets["lenet5"], tmp_path)
    art = _last(cli("litert", ckpt, "--precision", "fp16", "--json"))
    v = art["verification"]
    assert art["path"].endswith("lenet5.fp16.tflite") and verified(v) and v["precision"] == "fp16", v
    assert 1e-6 < v["max_rel_err"] <= 1e-2  # fp16 weights: not exact, within the fp16 rule
    assert (
        0.45 < art["details"]["float_bytes"]
        and (tmp_path / "lenet5.fp16.tflite").stat().st_size / art["details"]["float_bytes"] < 0.6
    )


@pytest.mark.full
def test_quantized_litert_models_past_256_kib_keep_their_offset_stored_weights(cli, tmp_path):
    """ai-edge-quantizer stores the buffers of all but tiny models after the flatbuffer, by offset;
    writing our metadata once dropped them and every such model failed to load ('out of range offset')."""
    import torch

    from tests.small_models import WideSmallResNet

    torch.manual_seed(0)
    torch.save(WideSmallResNet().state_dict(), tmp_path / "wide.pt")
    art = _last(
        cli(
            "litert", tmp_path / "wide.pt", "--arch", "tests.small_models:WideSmallResNet", *DIGITS_SPEC, "--precision", "fp16",
            "--json",
        )
    )  # fmt: skip
    assert verified(art["verification"]) and art["details"]["float_bytes"] > 2_000_000, art
    assert 256 * 1024 < (tmp_path / "wide.fp16.tflite").stat().st_size < 0.6 * art["details"]["float_bytes"]
    assert (
        cli(
            "verify",
            tmp_path / "wide.fp16.tflite",
            "--checkpoint",
            tmp_path / "wide.pt",
            "--arch",
            "tests.small_models:WideSmallResNet",
            *DIGITS_SPEC,
        ).exit_code
        == 0
    )


def test_a_quantizer_failure_is_one_sentence_exit_2_and_leaves_nothing(cli, digits_nets, tmp_path, monkeypatch):
    from ai_edge_quantizer import quantizer

    def refuse(self, *args, **kwargs):
        raise ValueError("Failed to get quantization parameters for tensor 'conv1'\n  (a page of detail)")

    monkeypatch.setattr(quantizer.Quantizer, "quantize", refuse)  # what wide_resnet50_2's int8 raised
    ckpt = _copy(digits_nets["lenet5"], tmp_path)
    r = cli("litert", ckpt, "--precision", "fp16")
    assert r.exit_code == 2, r
    assert "ai-edge-quantizer could not make the fp16 model (Failed to get quantization parameters" in r.stderr, r
    assert "Traceback" not in r.stderr and "a page of detail" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.pt"]


@pytest.mark.full
def test_nhwc_litert_equals_the_nchw_model_after_the_transpose(cli, digits_nets, built, tmp_path):
    from exporter.targets.litert.runner import LiteRTRunner

    ckpt = _copy(digits_nets["resnet"], tmp_path)
    nchw = built["resnet.litert"]
    nhwc = _last(
        cli("litert", ckpt, "--arch", SMALL_RESNET, *DIGITS_SPEC, "--layout", "nhwc", "-o", tmp_path / "nhwc.tflite", "--json")
    )
    assert verified(nchw["verification"]) and verified(nhwc["verification"]) and nhwc["details"]["layout"] == "nhwc"
    x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
    x = x[:1]  # the model's own batch: SmallResNet's flatten fixes it at 1
    with LiteRTRunner(built["folder"] / "resnet.tflite") as a, LiteRTRunner(tmp_path / "nhwc.tflite") as b:
        assert tuple(a._input["shape"]) == (1, 1, 32, 32) and tuple(b._input["shape"]) == (1, 32, 32, 1)
        raw = b._signature(**{b.input_name: np.ascontiguousarray(x.transpose(0, 2, 3, 1))})  # the interpreter itself
        direct = a._signature(**{a.input_name: x})
        key = next(iter(direct))
        np.testing.assert_allclose(raw[next(iter(raw))], direct[key], rtol=0, atol=1e-5)


# ----------------------------------------------------------------- both


@pytest.mark.parametrize("verb,suffix", [("executorch", ".pte"), ("litert", ".tflite")])
def test_a_weight_perturbed_inside_the_artifact_fails_verify(cli, digits_nets, built, tmp_path, verb, suffix):
    ckpt = _copy(digits_nets["lenet5"], tmp_path)
    artifact = tmp_path / f"lenet5{suffix}"
    shutil.copy(built["folder"] / artifact.name, artifact)
    assert verified(built[f"lenet5.{verb}"]["verification"])
    assert cli("verify", artifact, "--checkpoint", ckpt).exit_code == 0
    _negate_class_weights(artifact, ckpt)
    r = cli("verify", artifact, "--checkpoint", ckpt, "--json")
    assert r.exit_code == 1, r
    assert r.json()["artifacts"][-1]["verification"]["status"] == "fail"


@pytest.mark.parametrize("verb,suffix,batch_range", [("executorch", ".pte", [1, 32]), ("litert", ".tflite", [1, 1])])
def test_inspect_shows_what_an_android_artifact_declares(cli, built, verb, suffix, batch_range):
    r = cli("inspect", built["folder"] / f"lenet5{suffix}", "--json")
    assert r.exit_code == 0, r
    info = r.json()
    assert info["kind"] == verb and info["outputs"] == ["logits"] and info["batch_range"] == batch_range, info
    assert info["spec"]["arch"] == "lenet5" and info["spec"]["num_classes"] == 10 and info["bytes"] > 10_000
    table = cli("inspect", built["folder"] / f"lenet5{suffix}")
    assert table.exit_code == 0 and "(N x 1x32x32)" in table.stdout and "--checkpoint CKPT" in table.stderr, table


@pytest.mark.parametrize(
    "verb,blocked,extra",
    [("executorch", "executorch", "executorch"), ("litert", "ai_edge_litert", "litert")],
)
def test_without_the_extra_the_verb_exits_3_with_the_install_line(cli, digits_nets, tmp_path, monkeypatch, verb, blocked, extra):
    for name in [m for m in sys.modules if m == blocked or m.startswith(blocked + ".")] + [blocked]:
        monkeypatch.setitem(sys.modules, name, None)
    ckpt = _copy(digits_nets["lenet5"], tmp_path)
    r = cli(verb, ckpt)
    assert r.exit_code == 3 and f"pip install 'cnnexport[{extra}]'" in r.stderr, r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.pt"]


def test_a_converter_environment_that_cannot_be_created_is_exit_3_and_leaves_nothing(cli, digits_nets, tmp_path, monkeypatch):
    import exporter.targets.litert.stage as stage

    monkeypatch.setenv("CNNEXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(stage, "CONVERTER", ("cnnexport-no-such-converter==1.0",))
    out = tmp_path / "out"
    out.mkdir()
    ckpt = _copy(digits_nets["lenet5"], out)
    r = cli("litert", ckpt)
    assert r.exit_code == 3 and "cnnexport-no-such-converter==1.0" in r.stderr, r
    assert sorted(p.name for p in out.iterdir()) == ["lenet5.pt"]
    assert not any((tmp_path / "cache" / "envs").glob("litert-*/bin"))  # no half-made environment left


def test_the_mobile_recipe_plans_core_ml_and_both_android_targets_in_fp32_and_int8(cli, digits_nets, tmp_path):
    # the demo runs these stages through a recipe for real (tests/test_demo.py); here: the shipped recipe's plan
    ckpt = _copy(digits_nets["lenet5"], tmp_path)
    r = cli("run", "--recipe", "mobile", ckpt, "-o", tmp_path / "out", "--calib", "digits", "--dry-run", "--json")
    assert r.exit_code == 0, r
    plan = {step["stage"]: step for step in r.json()["plan"]}
    assert list(plan) == ["coreml", "executorch", "executorch_int8", "litert", "litert_int8"], list(plan)
    assert plan["coreml"]["options"]["precision"] == "fp16" and plan["executorch"]["options"]["precision"] == "fp32"
    assert "precision" not in plan["litert_int8"]["options"]  # the int8 stage has no other precision
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
