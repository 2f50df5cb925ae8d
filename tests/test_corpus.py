"""The whole bad-input corpus through the real CLI (tests/corpus/make_corpus.py builds it).

Every case: the documented exit code, exactly one `error:` line that names the problem, no
traceback, nothing written, changed or removed anywhere under the corpus folder, and no
hostile payload run. tests/test_bad_inputs.py holds the hand-written checks with more detail
per case (messages naming the file, the previous artifact kept, ...).
"""

from __future__ import annotations

import pickle
import sys

import pytest

from tests.corpus.make_corpus import INPUT_KINDS, YOLO, case_ids, make_corpus, not_importable, run_case, save_hostile


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, {c.id: c for c in make_corpus(root)}


@pytest.mark.parametrize("case_id", case_ids())
def test_bad_input_is_one_clean_error_and_writes_nothing(corpus, case_id):
    root, cases = corpus
    if cases[case_id].skip:
        pytest.skip(cases[case_id].skip)
    verdict = run_case(cases[case_id], root)
    assert verdict.clean, "\n".join([cases[case_id].command(), *verdict.problems, "stderr:", verdict.outcome.stderr[-2000:]])


def test_the_corpus_covers_every_input_kind(corpus):
    _, cases = corpus
    assert len(cases) >= 30
    kinds = {c.input for c in cases.values()}
    assert kinds == set(INPUT_KINDS)
    assert sum(bool(c.markers) for c in cases.values()) >= 3
    # detectors: Ultralytics checkpoints, detection data, their options and outputs, a hostile YOLO-shaped pickle;
    # built wherever Ultralytics imports, else each skipped saying why
    detection = [c for c in cases.values() if c.needs == YOLO]
    assert {c.input for c in detection} == {"checkpoint", "data", "cli", "output"}
    assert {c.skip for c in detection} == {not_importable(YOLO)}
    assert not_importable(YOLO) or any(c.markers for c in detection)  # the hostile YOLO-shaped pickle was built


def test_cases_of_a_package_that_does_not_import_say_so(monkeypatch):
    monkeypatch.setitem(sys.modules, YOLO, None)  # import ultralytics now raises ImportError
    assert not_importable(YOLO).startswith("ultralytics is not importable") and "scripts/setup.sh" in not_importable(YOLO)
    assert not_importable("pickle") == ""


@pytest.mark.parametrize("kind, plain", [("exec", False), ("system", True)])
def test_the_hostile_payloads_are_live(tmp_path, kind, plain):
    """Unpickled without the safe loader, the corpus's payloads do run: their absence above means something."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    save_hostile(path, marker, kind, plain_pickle=plain)
    assert not marker.exists()
    if plain:
        with open(path, "rb") as fh:
            pickle.load(fh)  # on purpose: proving the payload is real
    else:
        import torch

        torch.load(path, weights_only=False)
    assert marker.exists()
