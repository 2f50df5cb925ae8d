"""Unit tests of the comparison rule in exporter/verify.py."""

import numpy as np
import pytest

from exporter.verify import TOLERANCES, Check, Verdict, compare_arrays, tolerance_for, verify
from exporter.inputs import InputSet

FP32 = TOLERANCES["fp32"]


def logits(seed=0, n=8, k=10):
    return np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32) * 3


def test_identical_outputs_pass_with_zero_error():
    ref = logits()
    m = compare_arrays(ref, ref.copy(), FP32)
    assert m["status"] == "pass"
    assert m["max_abs_err"] == 0.0 and m["cosine"] == pytest.approx(1.0)
    assert m["top1_agreement"] == 1.0


def test_error_just_inside_and_outside_the_range_tolerance():
    ref = logits()
    value_range = float(ref.max() - ref.min())
    inside = ref.copy()
    inside[0, 0] += 0.5 * FP32.max_rel_err * value_range
    outside = ref.copy()
    outside[0, 0] += 2.0 * FP32.max_rel_err * value_range
    assert compare_arrays(ref, inside, FP32)["status"] == "pass"
    failed = compare_arrays(ref, outside, FP32)
    assert failed["status"] == "fail"
    assert "max error" in failed["reason"]
    assert failed["max_rel_err"] == pytest.approx(2.0 * FP32.max_rel_err, rel=1e-3)


def test_shape_mismatch_and_nan_fail():
    ref = logits()
    assert "shape" in compare_arrays(ref, ref[:1], FP32)["reason"]
    bad = ref.copy()
    bad[2, 3] = np.nan
    assert "NaN" in compare_arrays(ref, bad, FP32)["reason"]


def test_top1_flip_on_a_decisive_sample_fails_even_with_loose_error_tolerance():
    ref = np.array([[5.0, 1.0, 0.0], [0.0, 4.0, 1.0]], dtype=np.float32)
    swapped = ref.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    tol = tolerance_for("fp32", max_rel_err=10.0, min_cosine=-1.0)
    m = compare_arrays(ref, swapped, tol)
    assert m["top1_agreement"] == 0.5
    # with a 10x-range tolerance nothing is decisive, so this rule alone passes ...
    assert m["status"] == "pass"
    m = compare_arrays(ref, swapped, tolerance_for("fp32", max_rel_err=0.1, min_cosine=-1.0))
    # ... while a flip of a sample with a clear margin fails
    assert m["status"] == "fail" and "top-1" in m["reason"]


def test_near_tie_may_flip_within_tolerance():
    ref = np.array([[1.0, 1.0 + 1e-7, -3.0], [2.0, 0.0, -1.0]], dtype=np.float32)
    out = ref.copy()
    out[0, 0] += 2e-7
    m = compare_arrays(ref, out, FP32)
    assert m["status"] == "pass"
    assert m["top1_decisive"] == 1


def test_cosine_catches_a_scaled_output():
    ref = logits()
    m = compare_arrays(ref, ref * -1, tolerance_for("fp32", max_rel_err=100.0))
    assert m["status"] == "fail" and "cosine" in m["reason"]


def test_tolerance_table_orders_precisions_from_tight_to_loose():
    assert TOLERANCES["fp32"].max_rel_err < TOLERANCES["fp16"].max_rel_err < TOLERANCES["int8"].max_rel_err
    assert TOLERANCES["fp32"].min_cosine > TOLERANCES["fp16"].min_cosine > TOLERANCES["int8"].min_cosine
    assert "0.0001" in FP32.describe()


class _Runner:
    def __init__(self, fn, batch_dim="batch"):
        self.fn, self.batch_dim = fn, batch_dim

    def infer(self, x):
        return {"y": self.fn(x)}


def test_verify_fails_on_fixed_batch_declaration_and_on_runtime_error():
    sets = [InputSet("b1", np.ones((1, 4), np.float32)), InputSet("b4", np.ones((4, 4), np.float32))]
    ref = _Runner(lambda x: x * 2)

    def only_batch_one(x):
        if x.shape[0] != 1:
            raise RuntimeError("Got invalid dimensions for input")
        return x * 2

    v = verify(_Runner(only_batch_one, batch_dim=1), {"ref": ref}, sets, FP32)
    assert v.status == "fail"
    reasons = [c.reason for c in v.checks if c.status == "fail"]
    assert any("fixed to 1" in r for r in reasons)
    assert any("batch 4" in r for r in reasons)
    ok = verify(_Runner(lambda x: x * 2), {"ref": ref}, sets, FP32)
    assert ok.status == "pass" and ok.to_dict()["batch_sizes"] == [1, 4]


def test_skipped_verdict_is_never_pass():
    v = Verdict.skipped("--no-verify")
    assert v.status == "skipped" and v.label == "skipped (--no-verify)"
    assert v.to_dict()["max_abs_err"] is None
