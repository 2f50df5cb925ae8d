"""`--junit FILE` never lands on a file the command reads (the rest of --junit: tests/test_release.py)."""

from __future__ import annotations


def test_junit_onto_an_input_is_refused_before_any_work(cli, simple_cnn_ckpt, tmp_path):
    before = simple_cnn_ckpt.read_bytes()
    r = cli("onnx", simple_cnn_ckpt, "-o", tmp_path / "m.onnx", "--junit", simple_cnn_ckpt)
    assert r.exit_code == 2 and "is the source model" in r.stderr and "--junit" in r.stderr, r
    assert simple_cnn_ckpt.read_bytes() == before and not (tmp_path / "m.onnx").exists()
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{i}\n" for i in range(10)))
    r = cli("verify", tmp_path / "missing.onnx", "--checkpoint", simple_cnn_ckpt, "--labels", labels, "--junit", labels)
    assert r.exit_code == 2 and "is the --labels file" in r.stderr, r
    r = cli("run", simple_cnn_ckpt, "--recipe", "server-onnx-cpu", "-o", tmp_path / "d", "--junit", simple_cnn_ckpt)
    assert r.exit_code == 2 and "is a checkpoint" in r.stderr, r


def test_a_detectors_box_metrics_reach_the_statement_and_the_junit_file():
    """Every metric a verdict has is recorded: a detect output's F1 and box IoU, a segmenter's mIoU."""
    import xml.etree.ElementTree as ET

    from exporter.release.ci import junit_xml
    from exporter.release.statement import _outputs

    verification = {
        "status": "fail",
        "reason": "boxes lost",
        "outputs": {
            "boxes": {"task": "detect", "status": "fail", "reason": "F1 0.41 < 0.9", "f1": 0.41, "box_iou": 0.73, "cosine": None},
            "masks": {"task": "segment", "status": "pass", "reason": "", "miou": 0.97, "pixel_agreement": 0.99},
        },
    }
    recorded = _outputs(verification)
    assert recorded["boxes"] == {"task": "detect", "status": "fail", "f1": 0.41, "box_iou": 0.73}
    assert recorded["masks"]["miou"] == 0.97
    root = ET.fromstring(
        junit_xml([{"stage": "int8", "name": "yolo.int8.onnx", "seconds": 1.5, "verification": verification}], "t")
    )
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["yolo.int8.onnx"].find("failure").get("message") == "boxes lost"
    assert cases["yolo.int8.onnx [boxes]"].find("failure").get("message") == "F1 0.41 < 0.9"
    assert "f1 0.41" in cases["yolo.int8.onnx [boxes]"].find("system-out").text
    assert cases["yolo.int8.onnx [masks]"].find("failure") is None
    assert root.find("testsuite").get("failures") == "2" and root.find("testsuite").get("tests") == "3"
