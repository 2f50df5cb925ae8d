"""`--fallback auto` on every int8 target (issue 42): the shared search (exporter/rescue/search.py) and each
target's way of keeping layers in float, through the real CLI.

The model: a Conv-BN-Hardswish digits net with two activations one channel dominates (BatchNorm channel
x100, the conv reading it /100; Hardswish is not homogeneous, so equalization cannot move the scale).
Each crushed activation breaks the output on its own; passing needs the layer writing it and the one
reading it in float, four layers for the two.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import trained_digits_net
from tests.verdicts import verified

HS = ("--arch", "tests.small_models:HardswishCNN", "--input-shape", "1,32,32", "--mean", "0.5", "--std", "0.5")
CRUSHED = {"features.0", "features.3", "features.6", "features.9"}  # writer and reader of each crushed activation
FAST = ("--calib", "digits", "--samples", "128", "--holdout", "48")  # fewer calibration samples: each attempt is quicker


@pytest.fixture(scope="module")
def two_outliers(tmp_path_factory):
    """HardswishCNN trained on the digits, with the outputs of features.0 and features.6 dominated by one channel."""
    import torch

    from tests.small_models import HardswishCNN

    folder = tmp_path_factory.mktemp("rescue")
    model = HardswishCNN()
    model.load_state_dict(torch.load(trained_digits_net(tmp_path_factory, "hardswish"), weights_only=True))
    with torch.no_grad():
        for bn in (1, 7):
            model.features[bn].weight[3] *= 100
            model.features[bn].bias[3] *= 100
            model.features[bn + 2].weight[:, 3] /= 100
    torch.save(model.state_dict(), folder / "outliers.pt")
    return folder / "outliers.pt"


# ------------------------------------------------------------------ the search, on a model made of numbers


def _toy(breaking: dict[str, float], passing: float = 0.98):
    """A measure where each layer in ``breaking`` costs that much cosine while int8 (losses add); passes at ``passing``."""
    from exporter.rescue.search import Score

    calls = []

    def measure(floated, fix):
        calls.append((floated, fix.label))
        cosine = 1.0 - sum(loss for layer, loss in breaking.items() if layer not in floated) - 0.001 * (fix.label == "none")
        return Score(cosine >= passing, cosine)

    return measure, calls


def test_the_layers_that_break_the_output_are_kept_in_float_within_the_budget():
    from exporter.rescue.search import search

    layers = [f"l{i}" for i in range(8)]
    measure, calls = _toy({"l2": 0.5, "l5": 0.4, "l6": 0.01})
    plan = search(layers, measure, [], (3, "test"))
    assert plan.passed and plan.decided_by == "layers" and set(plan.floated) == {"l2", "l5"}, plan
    assert [row["layer"] for row in plan.ranking[:3]] == ["l2", "l5", "l6"]  # by measured damage
    assert plan.ranking[0]["damage"] == pytest.approx(0.501, abs=1e-6)  # 0.5 of its own, 0.001 for "no fix"
    assert [step["kept_in_float"] for step in plan.steps] == [1, 2] and plan.steps[-1]["status"] == "pass"
    assert max(len(floated) for floated, _ in calls if len(floated) < len(layers) - 1) <= 3  # attempts never over budget


def test_a_cheap_fix_that_passes_decides_and_nothing_is_kept_in_float():
    from exporter.rescue.search import Fix, Score, search

    def measure(floated, fix):
        return Score(fix.label == "per-tensor weights", 0.99 if fix.label == "per-tensor weights" else 0.5)

    plan = search(["a", "b"], measure, [Fix("minmax"), Fix("per-tensor weights", {"per_channel": False})], (2, "test"))
    assert plan.passed and plan.decided_by == "fix" and plan.fix.options == {"per_channel": False} and plan.floated == ()
    assert [row["fix"] for row in plan.fixes] == ["minmax", "per-tensor weights"] and plan.attempts == 3


def test_what_needs_more_than_the_budget_is_not_called_passed():
    from exporter.rescue.search import search

    measure, calls = _toy({"l1": 0.3, "l3": 0.3, "l4": 0.3})
    plan = search(["l0", "l1", "l2", "l3", "l4"], measure, [], (2, "--max-float-layers 2"))
    assert not plan.passed and plan.decided_by == "nothing passed" and len(plan.floated) == 2
    assert plan.best.cosine == pytest.approx(0.699, abs=1e-6)  # one 0.3 loss left, and no fix


def test_many_layers_are_ranked_by_block_first():
    from exporter.rescue.search import RANK_ALL, search

    layers = [f"stage{s}.block{b}.conv" for s in range(4) for b in range(20)]
    assert len(layers) > RANK_ALL
    measure, calls = _toy({"stage2.block7.conv": 0.5})
    plan = search(layers, measure, [], (4, "test"))
    assert plan.passed and plan.floated == ("stage2.block7.conv",)
    assert plan.attempts < len(layers)  # blocks first, then the layers of the worst blocks


# ------------------------------------------------------------------ through the CLI


def rescued(cli, verb: str, model, out, *flags) -> tuple[dict, dict]:
    """``cnnexport VERB MODEL --precision int8 --fallback auto --max-float-layers 4``: (the artifact, float_fallback)
    after asserting it passed and installed nothing else."""
    r = cli(
        verb, model, *HS, "--precision", "int8", *FAST, "--fallback", "auto", "--max-float-layers", "4", *flags,
        "-o", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][-1]
    assert verified(art["verification"]) and art["verification"]["cosine"] >= 0.98
    assert out.exists() and not list(out.parent.glob(".cnnexport-rescue-*"))  # attempts are cleaned up
    return art, art["details"]["float_fallback"]


def test_onnx_int8_is_rescued_by_the_ranked_search_where_the_greedy_one_fails(cli, two_outliers, tmp_path):
    plain = cli("quantize", two_outliers, *HS, "--calib", "digits", "-o", tmp_path / "plain.int8.onnx", "--json")
    assert plain.exit_code == 1 and plain.json()["artifacts"][-1]["verification"]["cosine"] < 0.5, plain
    greedy = cli(
        "quantize", two_outliers, *HS, "--calib", "digits", "--fallback", "greedy", "--max-float-layers", "4",
        "-o", tmp_path / "greedy.int8.onnx",
    )  # fmt: skip
    assert greedy.exit_code == 1 and "--fallback greedy stopped" in greedy.stderr, greedy
    out = tmp_path / "auto.int8.onnx"
    r = cli(
        "quantize", two_outliers, *HS, "--calib", "digits", "--fallback", "auto", "--max-float-layers", "4", "-o", out,
        "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][-1]
    fallback = art["details"]["float_fallback"]
    assert verified(art["verification"]) and art["verification"]["cosine"] >= 0.98
    assert set(fallback["layers"]) == CRUSHED and fallback["kept_in_float"] == 4 and fallback["weighted_layers"] == 7
    assert fallback["decided_by"] == "layers" and fallback["installed"] is True and fallback["share"] == round(4 / 7, 3)
    assert {row["layer"] for row in fallback["ranking"][:4]} == CRUSHED  # the four that break it rank first
    assert fallback["plain"]["status"] == "fail" and fallback["steps"][-1]["status"] == "pass"
    assert [step["kept_in_float"] for step in fallback["steps"]] == [1, 2, 3, 4]
    assert out.exists() and not list(tmp_path.glob(".cnnexport-rescue-*"))  # attempts are cleaned up


def test_a_budget_too_small_is_refused_and_the_best_attempt_kept_only_on_request(cli, two_outliers, tmp_path):
    out = tmp_path / "o.int8.onnx"
    args = ("quantize", two_outliers, *HS, "--calib", "digits", "--fallback", "auto", "--max-float-layers", "3", "-o", out)
    r = cli(*args)
    assert r.exit_code == 1 and "found nothing passing within the float budget of 3" in r.stderr, r
    assert not out.exists() and not list(tmp_path.glob("*.rejected.*")) and not list(tmp_path.glob(".cnnexport-rescue-*"))
    kept = cli(*args, "--keep-failed", "--json")
    assert kept.exit_code == 1
    fallback = kept.json()["artifacts"][-1]["details"]["float_fallback"]
    assert fallback["installed"] is False and fallback["kept_in_float"] == 3 and set(fallback["layers"]) < CRUSHED
    assert not out.exists() and len(list(tmp_path.glob("o.int8.rejected.onnx"))) == 1


def test_an_executorch_int8_program_is_rescued_and_checked_by_its_runtime(cli, two_outliers, tmp_path):
    pytest.importorskip("executorch.runtime", reason="ExecuTorch is not installed (scripts/setup.sh installs it)")
    out = tmp_path / "m.int8.pte"
    art, fallback = rescued(cli, "executorch", two_outliers, out)
    details = art["details"]
    assert art["verification"]["batch_sizes"][-1] > 1  # the program itself, run by ExecuTorch's runtime at several sizes
    assert set(fallback["layers"]) == CRUSHED and fallback["kept_in_float"] == 4
    assert CRUSHED <= set(details["kept_in_float"])  # with their BatchNorms and activations
    assert any("quantize_per_tensor" in op for op in details["delegated_ops"])  # the rest is still int8, in XNNPACK
    assert out.exists() and out.with_name("m.int8.pte.report.json").exists()


def test_fallback_is_refused_where_nothing_is_int8(cli, two_outliers, tmp_path):
    shutil.copy(two_outliers, tmp_path / "m.pt")
    r = cli("executorch", tmp_path / "m.pt", *HS, "--fallback", "auto")
    assert r.exit_code == 2 and "--fallback auto rescues int8 only: add --precision int8" in r.stderr, r


def test_an_openvino_int8_ir_is_rescued_through_nncf_ignored_scope(cli, two_outliers, tmp_path):
    pytest.importorskip("nncf", reason="NNCF is not installed (scripts/setup.sh installs it)")
    out = tmp_path / "m.int8.xml"
    art, fallback = rescued(cli, "openvino", two_outliers, out)
    assert {"features.3", "features.9"} <= set(fallback["layers"]) and fallback["kept_in_float"] <= 4  # the two readers
    ignored = art["details"]["nncf"]["ignored"]["names"]
    assert "node_Conv_98/WithoutBiases" in ignored or any(name.endswith("/WithoutBiases") for name in ignored)
    assert out.with_suffix(".bin").exists()


def test_a_litert_int8_model_is_rescued_with_its_ops_left_unquantized(cli, two_outliers, tmp_path):
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed (scripts/setup.sh installs it)")
    art, fallback = rescued(cli, "litert", two_outliers, tmp_path / "m.int8.tflite")
    assert set(fallback["layers"]) == CRUSHED and art["details"]["float_ops"] >= 4
    wrong = cli("litert", two_outliers, *HS, "--precision", "int8", *FAST, "--exclude", "features.1", "-o", tmp_path / "w.tflite")
    assert wrong.exit_code == 2 and "--exclude features.1: not a convolution or linear module" in wrong.stderr, wrong


def test_the_tensorrt_flavour_keeps_the_rescued_layers_without_qdq(cli, two_outliers, tmp_path):
    import onnx

    out = tmp_path / "m.int8-trt.onnx"
    r = cli(
        "quantize", two_outliers, *HS, "--target", "tensorrt", *FAST, "--fallback", "auto", "--max-float-layers", "4",
        "-o", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    fallback = r.json()["artifacts"][-1]["details"]["float_fallback"]
    assert set(fallback["layers"]) == CRUSHED
    graph = onnx.load(str(out)).graph
    quantized_weights = {
        n.input[0].split(".weight")[0] for n in graph.node if n.op_type == "DequantizeLinear" and ".weight" in n.input[0]
    }
    assert not quantized_weights & CRUSHED and {"features.12", "features.15"} <= quantized_weights  # TensorRT runs these float
    assert (tmp_path / "m.int8-trt.calib").exists() and not list(tmp_path.glob(".cnnexport-rescue-*"))  # its cache beside
    # the build kit made from it names those nodes and says why TensorRT keeps them fp32
    kit = cli("tensorrt", out, "--precision", "int8", *FAST, "--emit-script", tmp_path / "kit", "--json")
    assert kit.exit_code == 0, kit
    floated = json.loads((tmp_path / "kit" / "m.int8-trt.engine.build.json").read_text())["float_nodes"]
    convs = {n.name: n.input[1].split(".weight")[0] for n in graph.node if n.op_type == "Conv"}
    assert {convs[n] for n in floated if n in convs} == CRUSHED, floated  # the four convs (+ the nodes feeding them)
    readme = (tmp_path / "kit" / "README.md").read_text()
    assert f"## Kept in float ({len(floated)} nodes of `m.int8-trt.onnx`)" in readme and "strongly typed" in readme


def test_growth_goes_on_past_the_opened_blocks_in_block_order():
    from exporter.rescue.search import BLOCKS_OPENED, search

    layers = [f"stage{s}.block{b}.conv" for s in range(6) for b in range(10)]
    breaking = {f"stage{s}.block0.conv": 0.2 - 0.01 * s for s in range(BLOCKS_OPENED + 1)}  # one more block than opened
    measure, _ = _toy(breaking, passing=0.98)
    plan = search(layers, measure, [], (20, "test"))
    assert plan.passed and set(breaking) <= set(plan.floated), plan.steps
    assert any("block" in row for row in plan.ranking)  # the unopened blocks' layers, unmeasured


def test_an_output_without_a_cosine_is_ranked_by_what_its_task_measures():
    from exporter.rescue.search import score_of

    class Judged:  # the part of a Verdict score_of reads
        def __init__(self, status, **values):
            self.status, self.reason, self.values = status, "" if status == "pass" else "boxes lost", values

        def to_dict(self):
            return self.values

    boxes = score_of(Judged("fail", cosine=None, f1=0.42, top1_agreement=None))
    assert not boxes.passed and boxes.cosine == pytest.approx(0.42) and boxes.reason == "boxes lost"
    assert score_of(Judged("pass", cosine=0.99, f1=0.5)).cosine == pytest.approx(0.99)  # a cosine, where there is one
    assert score_of(Judged("fail")).cosine == -1.0
