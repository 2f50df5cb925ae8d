"""`cnnexport bench`, `cnnexport eval` and `inspect --flops` through the CLI."""

import struct

import pytest

COLOUR_MODEL = '''
import torch
from torch import nn

class ColourNet(nn.Module):
    """Predicts the dominant colour: classes sorted like ImageFolder does (blue, green, red)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x.mean(dim=(2, 3))[:, [2, 1, 0]] * self.scale
'''


def test_bench_numbers_are_sane_and_consistent(cli, simple_cnn_ckpt, exported_onnx, tmp_path):
    r = cli(
        "bench", simple_cnn_ckpt, exported_onnx, "--batch", "1,4", "--threads", "2", "--seconds", "0.3", "--min-runs", "5",
        "--plot", tmp_path / "chart.png", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    result = r.json()
    assert result["settings"]["threads"] == 2 and result["settings"]["batches"] == [1, 4]
    rows = result["rows"]
    assert {(row["kind"], row["batch"]) for row in rows} == {("pytorch", 1), ("pytorch", 4), ("onnx", 1), ("onnx", 4)}
    for row in rows:
        assert row["status"] == "ok" and row["runs"] >= 5
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1000 / row["mean_ms"], rel=1e-6)
        assert row["peak_rss_mb"] is None or row["peak_rss_mb"] > 10
        assert row["size_bytes"] > 0
    baseline = [row for row in rows if row["kind"] == "pytorch"]
    assert all(row["speedup"] == pytest.approx(1.0) for row in baseline)
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 200
    from PIL import Image

    Image.open(tmp_path / "chart.png").verify()


def test_bench_a_folder_of_artifacts_and_a_chosen_baseline(cli, exported_onnx):
    r = cli("bench", exported_onnx.parent, "--batch", "2", "--seconds", "0.2", "--baseline", exported_onnx.name, "--json")
    assert r.exit_code == 0, r
    rows = r.json()["rows"]
    assert [row["target"] for row in rows] == [exported_onnx.name]
    assert rows[0]["speedup"] == pytest.approx(1.0)
    bad = cli("bench", exported_onnx, "--baseline", "nope", "--seconds", "0.1")
    assert bad.exit_code == 2 and "nope" in bad.stderr


@pytest.fixture
def colour_data(tmp_path):
    """10 pictures whose labels can be checked by eye: 9 correctly labelled, 1 red picture filed under blue."""
    from PIL import Image

    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    counts = {"red": 4, "green": 3, "blue": 2}
    root = tmp_path / "colours"
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (20, 20), colours[name]).save(root / name / f"{i}.png")
    Image.new("RGB", (20, 20), colours["red"]).save(root / "blue" / "mislabelled.png")
    return root


def test_eval_reproduces_a_hand_checked_accuracy(cli, tmp_path, colour_data):
    import torch

    (tmp_path / "colour.py").write_text(COLOUR_MODEL)
    ckpt = tmp_path / "colour.pt"
    import importlib.util

    spec = importlib.util.spec_from_file_location("colour_mod", tmp_path / "colour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.ColourNet().state_dict(), ckpt)
    arch = ["--arch", f"{tmp_path / 'colour.py'}:ColourNet", "--input-shape", "3,16,16"]
    assert cli("onnx", ckpt, *arch, "-o", tmp_path / "art" / "colour.onnx").exit_code == 0
    r = cli("eval", tmp_path / "art", "--data", colour_data, "--checkpoint", ckpt, *arch, "--top", "2", "--json")
    assert r.exit_code == 0, r
    result = r.json()
    assert result["samples"] == 10
    for name in ("pytorch (reference)", "colour.onnx"):
        assert result["results"][name]["top1"] == pytest.approx(0.9)  # 9 of 10, by construction
        assert result["results"][name]["top2"] == pytest.approx(1.0)  # for a red picture blue (-1.8) outranks green (-2.04)
    assert result["results"]["colour.onnx"]["agreement_with_reference"] == 1.0
    assert result["results"]["colour.onnx"]["top1_drop_points"] == 0.0
    table = cli("eval", tmp_path / "art", "--data", colour_data, "--checkpoint", ckpt, *arch)
    assert table.exit_code == 0 and "90.00%" in table.stdout


def test_eval_bad_data_errors_cleanly(cli, exported_onnx, tmp_path):
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (20, 20)).save(flat / "a.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    for data, words in ((tmp_path / "missing", "does not exist"), (empty, "no images"), (flat, "no labels")):
        r = cli("eval", exported_onnx, "--data", data)
        assert r.exit_code == 2, r
        assert words in r.stderr and "Traceback" not in r.stderr


def test_inspect_flops_counts_lenet5_by_hand(cli, lenet5_ckpt):
    r = cli("inspect", lenet5_ckpt, "--flops", "--json")
    assert r.exit_code == 0, r
    info = r.json()
    # c1 6*28*28*25 + c3 16*10*10*150 + f5 400*120 + f6 120*84 + output 84*7 multiply-accumulates
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 7
    assert info["macs"] == macs and info["flops"] == 2 * macs
    assert info["bytes"] == lenet5_ckpt.stat().st_size


def test_bench_bad_batch_names_its_own_option(cli, exported_onnx):
    r = cli("bench", exported_onnx, "--batch", "0")
    assert r.exit_code == 2 and "--batch expects positive integers" in r.stderr
