"""Unit tests of the comparison rule in exporter/verify.py."""

import numpy as np
import pytest

from exporter.inputs import InputSet
from exporter.verify import TOLERANCES, Verdict, compare_arrays, tolerance_for, verify

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


def test_a_constant_class_offset_cannot_lift_the_cosine_of_a_class_map():
    from exporter.tasks.elementwise import cosines as _cosines

    rng = np.random.default_rng(0)
    signal = rng.normal(size=(2, 4, 16, 16))
    offset = np.array([40.0, 0.0, -40.0, 5.0]).reshape(1, 4, 1, 1)  # what a default-initialised head adds
    ref = (signal + offset).astype(np.float32)
    out = (0.5 * signal + 0.9 * rng.normal(size=signal.shape) + offset).astype(np.float32)  # the per-pixel signal half lost
    flat = float(_cosines(ref.astype(np.float64), out.astype(np.float64)).min())
    m = compare_arrays(ref, out, TOLERANCES["int8"], task="segment")
    assert flat > 0.99  # flattened, the offset hides the damage ...
    assert m["cosine"] < 0.7 and "centred cosine" in m["reason"] and m["status"] == "fail"  # ... centred, it shows


def test_class_map_agreement_and_miou_count_only_decisive_pixels():
    ref = np.zeros((1, 3, 4, 4), np.float32)
    ref[0, 0] = 5.0  # class 0 wins everywhere by a clear margin ...
    ref[0, 1, 0, 0] = 5.0 - 1e-6  # ... except one near tie
    flipped = ref.copy()
    flipped[0, 1, 0, 0] = 5.0 + 1e-6  # the near tie flips: within tolerance
    m = compare_arrays(ref, flipped, FP32, task="segment")
    assert m["status"] == "pass" and m["pixels_decisive"] == 15 and m["pixel_agreement"] == 1.0 and m["miou"] == 1.0
    crushed = ref.copy()
    crushed[0, 2, :2] = 9.0  # half the pixels now say class 2
    m = compare_arrays(ref, crushed, tolerance_for("int8", max_rel_err=10.0, min_cosine=-1.0), task="segment")
    assert m["pixel_agreement"] == pytest.approx(8 / 15) and m["miou"] < 0.5  # 7 of the 15 decisive pixels flipped
    assert "pixel agreement 0.533 < 0.9" in m["reason"] and "mIoU" in m["reason"]


def test_regression_outputs_are_judged_per_channel():
    rng = np.random.default_rng(1)
    boxes = rng.normal(size=(2, 10, 4)).astype(np.float32)
    boxes[..., 3] *= 0.2  # a small-range channel (e.g. a height)
    wrong = boxes.copy()
    wrong[..., 3] = -wrong[..., 3]  # that channel negated: small against the whole output's range
    m = compare_arrays(boxes, wrong, tolerance_for("fp32", max_rel_err=0.2, min_cosine=0.9), task="regress")
    assert m["max_rel_err"] < 0.2  # the whole-output rule alone would pass it
    assert m["max_channel_rel_err"] > 1.0 and m["status"] == "fail" and "its channel's range" in m["reason"]
    assert "top1_agreement" not in m and "pixel_agreement" not in m


def test_noise_rule_widens_only_fp32_and_only_without_an_explicit_max_rel_err():
    ref = logits()
    value_range = float(ref.max() - ref.min())
    out = ref.copy()
    out[0, 0] += 3e-4 * value_range
    assert compare_arrays(ref, out, FP32)["status"] == "fail"
    m = compare_arrays(ref, out, FP32, noise=1e-4, noise_cosine=1.0)
    assert m["status"] == "pass" and m["decided_by"] == "noise" and m["noise_rel_err"] == 1e-4
    assert compare_arrays(ref, out, FP32, noise=5e-5, noise_cosine=1.0)["status"] == "fail"  # 3e-4 > 4 x 5e-5
    assert compare_arrays(ref, out, TOLERANCES["fp16"], noise=1.0)["status"] == "pass"  # fp16: within its own 1e-2 anyway
    assert TOLERANCES["fp16"].noise_multiple is None and TOLERANCES["int8"].noise_multiple is None
    assert tolerance_for("fp32", max_rel_err=1e-4).noise_multiple is None
