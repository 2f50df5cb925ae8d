"""Compare an artifact's outputs with the reference's on the same inputs -> Verdict.

The pass rule, per input set and output (printed in every report):
  * the artifact runs and returns the reference's output shape, with finite values;
  * max |artifact - reference| <= max_rel_err * (max(reference) - min(reference));
  * the smallest per-sample cosine similarity >= min_cosine;
  * top-1 agreement >= min_top1, counted over samples whose reference top-1 margin exceeds
    the allowed error (a closer call may legitimately flip within tolerance);
  * the artifact's declared batch dimension is dynamic (a baked batch fails).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from exporter.inputs import InputSet
from exporter.errors import UnsupportedOp, first_line
from exporter.runners.base import Runner, as_runner


@dataclass(frozen=True)
class Tolerance:
    max_rel_err: float
    min_cosine: float
    min_top1: float

    def describe(self) -> str:
        return (
            f"|artifact - reference| <= {self.max_rel_err:g} x reference range, "
            f"cosine >= {self.min_cosine:g}, top-1 agreement >= {self.min_top1:g}"
        )


# One visible table of per-precision defaults; every value can be overridden on the command line.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel_err=1e-4, min_cosine=0.99999, min_top1=1.0),
    "fp16": Tolerance(max_rel_err=1e-2, min_cosine=0.999, min_top1=0.99),
    "int8": Tolerance(max_rel_err=0.25, min_cosine=0.98, min_top1=0.90),
}


def tolerance_for(precision: str, max_rel_err=None, min_cosine=None, min_top1=None) -> Tolerance:
    base = TOLERANCES[precision]
    overrides = {"max_rel_err": max_rel_err, "min_cosine": min_cosine, "min_top1": min_top1}
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Check:
    reference: str
    inputs: str
    batch_size: int
    status: str
    reason: str = ""
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    top1_decisive: int | None = None
    top5_overlap: float | None = None
    judged: bool = True


@dataclass
class Verdict:
    status: str  # "pass" | "fail" | "skipped"
    reason: str = ""
    precision: str = "fp32"
    tolerance: Tolerance | None = None
    checks: list[Check] = field(default_factory=list)
    first_divergent: dict | None = None  # a failed ONNX artifact: the first layer past the rule (exporter.debug)

    @classmethod
    def skipped(cls, reason: str, precision: str = "fp32") -> "Verdict":
        return cls(status="skipped", reason=reason, precision=precision)

    @property
    def label(self) -> str:
        return f"{self.status} ({self.reason})" if self.reason and self.status != "pass" else self.status

    def _worst(self, name: str, fn):
        judged = [c for c in self.checks if c.judged and c.reference != "metadata"] or self.checks
        values = [getattr(c, name) for c in judged if getattr(c, name) is not None]
        return fn(values) if values else None

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reason": self.reason,
            "precision": self.precision,
            "rule": self.tolerance.describe() if self.tolerance else None,
            "tolerance": asdict(self.tolerance) if self.tolerance else None,
            "max_abs_err": self._worst("max_abs_err", max),
            "max_rel_err": self._worst("max_rel_err", max),
            "cosine": self._worst("cosine", min),
            "top1_agreement": self._worst("top1_agreement", min),
            "top5_overlap": self._worst("top5_overlap", min),
            "batch_sizes": sorted({c.batch_size for c in self.checks if c.reference != "metadata"}),
            "checks": [asdict(c) for c in self.checks],
            **({"first_divergent": self.first_divergent} if self.first_divergent else {}),
        }


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-300)
    return np.where(both_zero, 1.0, cos)


def compare_arrays(ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> dict:
    """Metrics of one output, in float64. Returns the Check fields plus status/reason."""
    if out.shape != ref.shape:
        return {"status": "fail", "reason": f"output shape {tuple(out.shape)} differs from reference {tuple(ref.shape)}"}
    ref64 = ref.astype(np.float64)
    out64 = out.astype(np.float64)
    if not np.isfinite(out64).all():
        bad = int((~np.isfinite(out64)).sum())
        return {"status": "fail", "reason": f"{bad} output values are NaN or infinite"}
    diff = np.abs(out64 - ref64)
    value_range = float(ref64.max() - ref64.min()) or 1.0
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = max_abs / value_range
    cosine = float(_cosines(ref64, out64).min())
    metrics = {"max_abs_err": max_abs, "max_rel_err": rel, "cosine": cosine}
    reasons = []
    if ref.ndim == 2 and ref.shape[1] > 1:
        ref_top = np.argsort(-ref64, axis=1)
        out_top = np.argsort(-out64, axis=1)
        agree = ref_top[:, 0] == out_top[:, 0]
        margin = ref64[np.arange(len(ref64)), ref_top[:, 0]] - ref64[np.arange(len(ref64)), ref_top[:, 1]]
        decisive = margin > tol.max_rel_err * value_range
        k = min(5, ref.shape[1])
        overlap = np.mean([len(set(r[:k]) & set(o[:k])) / k for r, o in zip(ref_top, out_top)])
        metrics["top1_agreement"] = float(agree.mean())
        metrics["top1_decisive"] = int(decisive.sum())
        metrics["top5_overlap"] = float(overlap)
        if decisive.any() and float(agree[decisive].mean()) < tol.min_top1:
            reasons.append(f"top-1 agreement {float(agree[decisive].mean()):.3f} < {tol.min_top1:g}")
    if rel > tol.max_rel_err or math.isnan(rel):
        reasons.insert(0, f"max error {rel:.3g} x range > {tol.max_rel_err:g}")
    if cosine < tol.min_cosine:
        reasons.append(f"cosine {cosine:.6f} < {tol.min_cosine:g}")
    metrics["status"] = "fail" if reasons else "pass"
    metrics["reason"] = "; ".join(reasons)
    return metrics


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    z = x.astype(np.float64) - x.astype(np.float64).max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


# How an artifact's first output relates to the reference's logits (runner.reference_transform).
REFERENCE_TRANSFORMS = {"softmax": softmax}


def verify(
    artifact: Runner,
    references: dict[str, Runner],
    input_sets: list[InputSet],
    tolerance: Tolerance,
    precision: str = "fp32",
) -> Verdict:
    """Run the artifact and each reference runner on every input set and judge with ``tolerance``.

    An artifact whose first output is a function of the logits (a Core ML classifier's
    probabilities) says so with ``reference_transform``; the reference's output is transformed
    the same way before comparing. A batch dimension fixed on request (``requested_fixed_batch``,
    e.g. `cnnexport coreml --batch 1`) is not a baked batch. An artifact that cannot be executed
    here because its runner lacks an op (``UnsupportedOp``) is ``skipped``, never ``pass``.
    """
    artifact = as_runner(artifact)  # the declared contract (exporter/runners/base.py), defaults for what it omits
    if artifact.unsupported_op is not None:
        return Verdict.skipped(str(artifact.unsupported_op), precision)
    checks: list[Check] = []
    batch_dim = artifact.batch_dim
    transform_name = artifact.reference_transform
    transform = REFERENCE_TRANSFORMS.get(transform_name) if transform_name else None
    if transform_name and transform is None:
        checks.append(Check("declaration", "outputs", 0, "fail", f"the artifact's outputs are {transform_name!r} of the logits, which cnnexport cannot compare"))
    if isinstance(batch_dim, int) and batch_dim != artifact.requested_fixed_batch:
        checks.append(
            Check("declaration", "input signature", batch_dim, "fail", f"the batch dimension is fixed to {batch_dim}, not dynamic")
        )
    for ref_name, reference in references.items():
        for inputs in input_sets:
            check = Check(ref_name, inputs.name, inputs.batch_size, "pass", judged=inputs.judged)
            try:
                expected = reference.infer(inputs.array)
            except Exception as exc:  # noqa: BLE001 - a reference that cannot run is an input problem
                check.status, check.reason = "fail", f"the reference failed on these inputs: {first_line(exc)}"
                checks.append(check)
                continue
            try:
                actual = artifact.infer(inputs.array)
            except UnsupportedOp as exc:
                return Verdict.skipped(str(exc), precision)
            except Exception as exc:  # noqa: BLE001 - runtimes raise their own types
                check.status, check.reason = "fail", f"the artifact failed at batch {inputs.batch_size}: {first_line(exc)}"
                checks.append(check)
                continue
            ref_out = next(iter(expected.values()))
            art_out = next(iter(actual.values()))
            if transform is not None:
                ref_out = transform(ref_out)
            metrics = compare_arrays(ref_out, art_out, tolerance)
            if not inputs.judged and "max_abs_err" in metrics:
                metrics.update(status="pass", reason="runs, shape and finiteness checked; numbers not judged on these inputs")
            for key, value in metrics.items():
                setattr(check, key, value)
            checks.append(check)
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        first = failed[0]
        reason = f"{first.reference} / {first.inputs}: {first.reason}"
        return Verdict("fail", reason, precision, tolerance, checks)
    return Verdict("pass", "", precision, tolerance, checks)


def check_metadata(stored: dict, spec) -> Check | None:
    """Fail when the spec stored in an artifact disagrees with the reference's spec.

    A wrong mean/std or input size in the metadata makes every deployment preprocess wrongly,
    even if the graph itself computes the right numbers.
    """
    if not stored:
        return None
    from exporter.spec import ModelSpec

    theirs = ModelSpec.from_dict(stored)
    differences = []
    if theirs.input_shape != spec.input_shape:
        differences.append(f"input shape {theirs.input_shape} vs {spec.input_shape}")
    if theirs.num_classes != spec.num_classes:
        differences.append(f"num_classes {theirs.num_classes} vs {spec.num_classes}")
    for name in ("mean", "std"):
        a = np.asarray(getattr(theirs, f"channel_{name}")())
        b = np.asarray(getattr(spec, f"channel_{name}")())
        if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-6):
            differences.append(f"{name} {tuple(a.tolist())} vs {tuple(b.tolist())}")
    if not differences:
        return Check("metadata", "stored input spec", 0, "pass")
    return Check("metadata", "stored input spec", 0, "fail", "artifact metadata disagrees with the reference: " + "; ".join(differences))


def finish(verdict: Verdict, extra: list[Check]) -> Verdict:
    """Fold extra checks (metadata, ...) into a verdict."""
    extra = [c for c in extra if c is not None]
    if not extra or verdict.status == "skipped":
        return verdict
    checks = extra + verdict.checks
    failed = [c for c in verdict.checks + extra if c.status == "fail"]  # the comparison's own reason (a baked batch, ...) first
    if failed:
        return Verdict("fail", f"{failed[0].reference} / {failed[0].inputs}: {failed[0].reason}", verdict.precision, verdict.tolerance, checks)
    return Verdict(verdict.status, verdict.reason, verdict.precision, verdict.tolerance, checks)


def fp16_range_check(path, input_sets: list[InputSet]) -> Check | None:
    """Fail when a float16 tensor of an ONNX model overflows on the verification inputs."""
    from exporter.runners.onnxruntime import nonfinite_fp16_tensors

    if not input_sets:
        return None
    batch = np.concatenate([s.array for s in input_sets[:2]])
    if not np.isfinite(batch).all():
        return None
    try:
        overflowing = nonfinite_fp16_tensors(path, batch)
    except Exception as exc:  # noqa: BLE001 - e.g. a baked batch: the artifact fails verification, verify does not crash
        return Check("fp16 range", "every fp16 tensor", len(batch), "fail", f"the fp16 range probe cannot run the model: {first_line(exc)}")
    if not overflowing:
        return Check("fp16 range", "every fp16 tensor", len(batch), "pass")
    shown = ", ".join(overflowing[:5])
    return Check("fp16 range", "every fp16 tensor", len(batch), "fail",
                 f"{len(overflowing)} fp16 tensor(s) overflow to inf/NaN ({shown}); keep those nodes in fp32")
