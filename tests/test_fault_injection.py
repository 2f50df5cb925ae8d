"""The verifier against planted mistakes: every fault x artifact kind is caught, every clean artifact passes.

tests/faults.py builds the artifacts (a small model trained to tell colours apart, exported as
ONNX, simplified ONNX, TorchScript, INT8 and FP16 ONNX) and plants the faults; each is checked
the way a user would: `cnnexport verify FAULTY --checkpoint CKPT --precision P --images HELDOUT`.
The detection matrix (full tier) does the same for a YOLO11n trained by Ultralytics on drawn shapes
(ONNX, FP16 and INT8 ONNX), judged by the boxes found on its held-out images.
"""

from __future__ import annotations

import json

import pytest

from tests.faults import (
    DETECT_FAULTS,
    DETECT_KINDS,
    FAULTS,
    KINDS,
    build_artifacts,
    build_yolo_artifacts,
    detect_matrix,
    faulty_name,
    matrix,
    verify_cli,
)
from tests.verdicts import passed

# words the failure reason must contain: the verifier says *why*, not only that something differs
EXPECTED_REASON = {
    "mean-std": "mean",
    "batch": ("batch", "shape"),
    "fp16-overflow": "overflow",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    ckpt, artifacts, heldout = build_artifacts(folder)
    return folder, ckpt, artifacts, heldout


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_unmodified_artifact_passes(built, kind):
    _, ckpt, artifacts, heldout = built
    outcome = verify_cli(artifacts[kind], ckpt, kind, heldout)
    assert outcome.exit_code == 0, f"false alarm on the clean {kind} artifact: {outcome.reason}\n{outcome.stderr[-1500:]}"
    passed(outcome)  # exit 0 is also what a skipped verdict returns: the report must say pass, with its numbers


@pytest.mark.parametrize("fault, kind", matrix())
def test_the_planted_fault_is_caught(built, fault, kind):
    folder, ckpt, artifacts, heldout = built
    clean = artifacts[kind]
    faulty = folder / "faulty" / faulty_name(clean, fault)
    faulty.parent.mkdir(exist_ok=True)
    FAULTS[fault].inject(clean, faulty, kind)
    assert faulty.read_bytes() != clean.read_bytes()
    outcome = verify_cli(faulty, ckpt, kind, heldout)
    assert outcome.exit_code == 1, f"{fault} in {kind} was not caught (exit {outcome.exit_code}): {outcome.stderr[-1500:]}"
    assert json.loads(outcome.stdout)["artifacts"][0]["verification"]["status"] == "fail"
    assert outcome.reason
    words = EXPECTED_REASON.get(fault)
    if words:
        words = (words,) if isinstance(words, str) else words
        assert any(w in outcome.reason for w in words), outcome.reason


def test_the_matrix_covers_every_kind_and_fault():
    cells = matrix()
    assert {k for _, k in cells} == set(KINDS)
    assert {f for f, _ in cells} == set(FAULTS)
    assert len(cells) >= 25


# --------------------------------------------------------------------------- detection (full tier: training takes ~40 s)

DETECT_REASON = {
    "score-negated": "score error",
    "box-shifted": "box error",
    "mean-std": "mean",
    "batch": ("batch", "shape"),
    "int8-collapse": "matched-box F1 0.000",
}
ON_THE_BOXES = ("score-negated", "box-shifted", "rgb-bgr", "int8-collapse")  # seen in the held-out images' boxes too


@pytest.fixture(scope="module")
def yolo_built(tmp_path_factory):
    pytest.importorskip("ultralytics", reason="the ultralytics extra is not installed (scripts/setup.sh installs it)")
    from exporter.sources.ultralytics import restore_pil_open

    folder = tmp_path_factory.mktemp("yolo_faults")
    try:
        best, artifacts, heldout = build_yolo_artifacts(folder)
    finally:
        restore_pil_open()  # importing Ultralytics patched PIL's Image.open for the whole process
    return folder, best, artifacts, heldout


def _on_images(outcome) -> dict:
    """The check on the held-out images (the one input set with boxes to agree on)."""
    checks = json.loads(outcome.stdout)["artifacts"][0]["verification"]["checks"]
    found = [c for c in checks if c["inputs"].startswith("images")]
    assert len(found) == 1, [c["inputs"] for c in checks]
    return found[0]


@pytest.mark.full
@pytest.mark.parametrize("kind", list(DETECT_KINDS))
def test_the_unmodified_yolo_artifact_passes_on_its_boxes(yolo_built, kind):
    from exporter.tasks.detect import MIN_BOXES, RULES

    _, best, artifacts, heldout = yolo_built
    outcome = verify_cli(artifacts[kind], best, kind, heldout)
    assert outcome.exit_code == 0, f"false alarm on the clean YOLO {kind} artifact: {outcome.reason}\n{outcome.stderr[-1500:]}"
    passed(outcome, metrics=("box_err", "score_err", "f1"))
    images = _on_images(outcome)
    assert images["reference_boxes"] >= MIN_BOXES and images["f1"] >= RULES[DETECT_KINDS[kind][0]].min_f1, images


@pytest.mark.full
@pytest.mark.parametrize("fault, kind", detect_matrix())
def test_the_planted_detection_fault_is_caught(yolo_built, fault, kind):
    folder, best, artifacts, heldout = yolo_built
    clean = artifacts[kind]
    faulty = folder / "faulty" / faulty_name(clean, fault)
    faulty.parent.mkdir(exist_ok=True)
    DETECT_FAULTS[fault].inject(clean, faulty, kind)
    assert faulty.read_bytes() != clean.read_bytes()
    outcome = verify_cli(faulty, best, kind, heldout)
    assert outcome.exit_code == 1, f"{fault} in YOLO {kind} was not caught (exit {outcome.exit_code}): {outcome.stderr[-1500:]}"
    assert json.loads(outcome.stdout)["artifacts"][0]["verification"]["status"] == "fail"
    words = DETECT_REASON.get(fault)
    if words:
        words = (words,) if isinstance(words, str) else words
        assert any(w in outcome.reason for w in words), outcome.reason
    if fault in ON_THE_BOXES:
        assert _on_images(outcome)["status"] == "fail", outcome.reason


def test_the_detection_matrix_plants_the_mistakes_detectors_make():
    cells = detect_matrix()
    assert {k for _, k in cells} == set(DETECT_KINDS)
    assert {f for f, _ in cells} == set(DETECT_FAULTS)
    for fault in ("score-negated", "box-shifted", "rgb-bgr", "batch"):
        assert {k for f, k in cells if f == fault} == set(DETECT_KINDS), fault
    assert ("int8-collapse", "int8") in cells and len(cells) >= 17
