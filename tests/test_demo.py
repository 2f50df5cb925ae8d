import importlib.util

import pytest

from tests.verdicts import verified


def check_demo_report(report: dict, out) -> None:
    """What the digits demo must deliver; the README's own `cnnexport demo` is checked with this too (tests/test_docs.py)."""
    kinds = [a["kind"] for a in report["artifacts"]]
    assert kinds[:5] == ["torchscript", "onnx", "simplify", "int8-cpu", "fp16"]
    for art in report["artifacts"]:
        v = art["verification"]
        if art["kind"] == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
            # issue 43: TensorRT is not left out without a word: skipped with the reason, and its build kit written
            assert (v["status"], v["reason"]) == ("skipped", "tensorrt not installed"), v
            assert (
                art["path"].endswith("lenet5_digits-tensorrt-kit") and (out / "lenet5_digits-tensorrt-kit" / "build.sh").exists()
            )
            continue
        assert verified(v)
        assert any(c["inputs"].startswith("held-out digits") for c in v["checks"])
    assert "tensorrt" in kinds
    acc = report["demo"]["heldout_accuracy"]
    assert report["demo"]["heldout_samples"] == 360
    assert acc["pytorch"] > 0.9  # LeNet-5 learns the digits; chance is 0.1
    for name, value in acc.items():
        drop = (acc["pytorch"] - value) * 100
        if ".int8." in name:
            assert drop <= 1.0, (name, drop)  # INT8 loses at most one point on held-out digits
        elif ".fp16." in name:
            assert drop <= 0.2, (name, drop)
        else:
            assert abs(value - acc["pytorch"]) <= 1 / 360, name  # fp32 artifacts agree with PyTorch
    # the Core ML package: verified and measured by the MIL interpreter (within one digit of PyTorch)
    assert "coreml" in kinds and abs(acc["lenet5_digits.mlpackage"] - acc["pytorch"]) <= 1 / 360
    assert (out / "lenet5_digits.pt").exists() and (out / "demo-report.json").exists()
    assert report["model"]["arch"] == "lenet5" and report["model"]["labels"] == [str(d) for d in range(10)]


@pytest.mark.full  # the required tier checks the README's own demo run the same way (tests/test_docs.py)
def test_demo_trains_exports_verifies_and_reports_accuracy(cli, tmp_path):
    out = tmp_path / "demo"
    r = cli("demo", "-o", out, "--epochs", "8", "--json")
    assert r.exit_code == 0, r
    check_demo_report(r.json(), out)


def test_demo_table_output(cli, tmp_path, monkeypatch):
    import exporter.demo

    monkeypatch.setattr(exporter.demo, "ANDROID_STAGES", ())  # the tables are the subject; the JSON test covers every stage
    r = cli("demo", "-o", tmp_path / "d", "--epochs", "1")
    assert r.exit_code == 0, r
    assert "held-out accuracy" in r.stdout and "lenet5_digits.sim.onnx" in r.stdout and "pass rule" in r.stdout
    if importlib.util.find_spec("tensorrt") is None:
        # said in the table, the reason numbered under it, with its kit (the row does not widen the table)
        row = [line for line in r.stdout.splitlines() if "│ tensorrt " in line]
        assert row and "skipped [1]" in row[0] and "lenet5_digits-tensorrt-kit" in row[0], row
        assert "[1] lenet5_digits-tensorrt-kit: tensorrt not installed" in r.stdout
        assert max(map(len, r.stdout.splitlines())) <= 160


def test_segmentation_demo_trains_exports_verifies_and_reports_miou(cli, tmp_path):
    out = tmp_path / "seg"
    r = cli("demo", "--task", "segment", "-o", out, "--epochs", "6", "--json")
    assert r.exit_code == 0, r
    report = r.json()
    kinds = [a["kind"] for a in report["artifacts"]]
    assert kinds == ["torchscript", "onnx", "simplify", "int8-cpu", "fp16", "coreml", "openvino"]
    for art in report["artifacts"]:
        v = art["verification"]
        assert verified(v), (art["kind"], v["reason"])
        assert v["outputs"]["logits"]["task"] == "segment"
        assert any(c["inputs"].startswith("held-out shapes") and c["pixel_agreement"] is not None for c in v["checks"])
    miou = report["demo"]["heldout_miou"]
    assert report["model"]["num_classes"] == 4 and report["model"]["labels"][0] == "background"
    assert miou["pytorch"] > 0.35  # all background would score ~0.24 (one of four classes right)
    for name, value in miou.items():
        limit = 3.0 if ".int8." in name else 0.5
        assert abs(miou["pytorch"] - value) * 100 <= limit, (name, value)
    assert (out / "heldout_shapes.npz").exists()

    # cnnexport eval on the demo's held-out pairs: mIoU per artifact beside PyTorch's
    ev = cli(
        "eval", out / "tiny_unet_shapes.onnx", out / "tiny_unet_shapes.int8.onnx", "--checkpoint", out / "tiny_unet_shapes.pt",
        "--data", out / "heldout_shapes.npz", "--json",
    )  # fmt: skip
    assert ev.exit_code == 0, ev
    results = ev.json()["results"]
    assert results["pytorch (reference)"]["miou"] == pytest.approx(miou["pytorch"], abs=1e-9)
    assert len(results) == 3
    fp32, int8 = [v for k, v in results.items() if k != "pytorch (reference)"]
    assert fp32["pixel_agreement_with_reference"] > 0.999 and int8["pixel_agreement_with_reference"] > 0.95


def test_eval_reads_a_folder_of_image_and_mask_pngs(cli, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from exporter import architectures
    from exporter.demo_segment import shapes

    pixels, masks = shapes(6, seed=3)
    for sub in ("images", "masks"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    for i, (p, m) in enumerate(zip(pixels, masks)):
        Image.fromarray((p.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(tmp_path / "pairs" / "images" / f"s{i}.png")
        Image.fromarray(m.astype(np.uint8), mode="L").save(tmp_path / "pairs" / "masks" / f"s{i}.png")
    torch.manual_seed(0)
    torch.save(architectures.get("tiny_unet").build().state_dict(), tmp_path / "tiny_unet.pt")
    r = cli("eval", tmp_path / "tiny_unet.pt", "--arch", "tiny_unet", "--data", tmp_path / "pairs", "--json")
    assert r.exit_code == 0, r
    result = r.json()
    assert result["task"] == "segment" and result["samples"] == 6 and result["classes"] == 4
    row = result["results"]["pytorch (reference)"]
    assert 0.0 <= row["miou"] <= 1.0 and len(row["iou_per_class"]) == 4
    (tmp_path / "pairs" / "masks" / "s0.png").unlink()
    missing = cli("eval", tmp_path / "tiny_unet.pt", "--arch", "tiny_unet", "--data", tmp_path / "pairs")
    assert missing.exit_code == 2 and "have no mask PNG of the same name (first: s0.png)" in missing.stderr
