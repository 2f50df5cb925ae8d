"""The suite can tell pass from skip: under a verifier that says `skipped` (or `pass`) for everything, it fails.

A child pytest runs a sample of the verifier-dependent tests with CNNEXPORT_TEST_FAKE_VERDICT set
(tests/conftest.py swaps the verifier then): clean artifacts that "pass" only by exit code, and
planted faults that are "caught" only by exit code, would let a verifier that compares nothing
through. Both runs must fail, and a named set of tests must be among the ones that catch it.
The whole suite's counts under both fakes are in the note of issue 29 (a 20-minute run).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAKE_VERDICT

REPO = Path(__file__).resolve().parents[1]
# the clean artifacts of every kind and two planted faults: the whole fault matrix (27 cells) cost ~2 min here
FAULTS = "tests/test_fault_injection.py::test_the_planted_fault_is_caught"
SAMPLE = [
    "tests/test_fault_injection.py::test_the_unmodified_artifact_passes",
    f"{FAULTS}[weight-onnx]",
    f"{FAULTS}[int8-scales-int8]",
    "tests/test_user_files.py::test_an_opset_is_written_as_asked",
    "tests/test_quantize.py::test_broken_scales_fail_verification",
]
# each must fail under both fakes: they assert the verdict and its numbers, not an exit code
MUST_CATCH = ("test_the_unmodified_artifact_passes", "test_an_opset_is_written_as_asked", "test_broken_scales_fail_verification")


def _child(mode: str, tmp_path: Path) -> tuple[dict, set[str]]:
    report = tmp_path / f"{mode}.txt"
    env = {**os.environ, FAKE_VERDICT: mode}
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:logging", "-rfE",
            f"--basetemp={tmp_path / mode}", *SAMPLE,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    report.write_text(proc.stdout + proc.stderr)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?)", summary)}
    caught = set(re.findall(r"^(?:FAILED|ERROR) \S+::(\w+)", proc.stdout, re.MULTILINE))
    return counts, caught


@pytest.mark.full
@pytest.mark.skipif(bool(os.environ.get(FAKE_VERDICT)), reason="already inside a fake-verdict run")
@pytest.mark.parametrize("mode", ["skipped", "pass"])
def test_a_verifier_that_compares_nothing_fails_the_suite(tmp_path, mode):
    counts, caught = _child(mode, tmp_path)
    failing = counts.get("failed", 0) + counts.get("errors", 0) + counts.get("error", 0)
    assert failing > 0, f"with every verdict faked to {mode!r} the sample still passes: {counts}"
    missing = [name for name in MUST_CATCH if name not in caught]
    assert not missing, f"{missing} did not notice verdicts faked to {mode!r} ({counts})"
