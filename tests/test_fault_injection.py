"""The verifier against planted mistakes: every fault x artifact kind is caught, every clean artifact passes.

tests/faults.py builds the artifacts (a small model trained to tell colours apart, exported as
ONNX, simplified ONNX, TorchScript, INT8 and FP16 ONNX) and plants the faults; each is checked
the way a user would: `cnnexport verify FAULTY --checkpoint CKPT --precision P --images HELDOUT`.
"""

from __future__ import annotations

import json

import pytest

from tests.faults import FAULTS, KINDS, build_artifacts, faulty_name, matrix, verify_cli
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
