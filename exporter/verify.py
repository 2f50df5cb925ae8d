"""Compare an artifact's outputs with the reference's on the same inputs -> Verdict.

Every output the reference returns is compared with the artifact's output of the same name (by
position when the artifact renamed them), with the metric its task needs (exporter/outputs.py).
The pass rule, per input set and output (printed in every report):
  * the artifact runs and returns the reference's output shape, with finite values;
  * max |artifact - reference| <= max_rel_err * (max(reference) - min(reference)); a regression
    output (dense / regress) is judged per channel, against each channel's own range (at least a
    tenth of the whole output's);
  * the smallest per-sample cosine similarity >= min_cosine; logits and class maps are centred
    first (each class's mean and each sample's mean over the classes removed), so a constant
    offset cannot lift it;
  * classify: top-1 agreement >= min_top1, counted over samples whose reference top-1 margin
    exceeds the allowed error (a closer call may legitimately flip within tolerance);
  * segment: per-pixel argmax agreement >= min_top1 and the mean IoU of the artifact's class map
    against the reference's >= min_miou, over pixels whose reference margin exceeds tie_margin;
  * fp32 only: where the fixed max error is exceeded, the reference's own numeric noise (PyTorch
    fp32 against PyTorch fp64 on the same inputs) is measured, and an error within noise_multiple
    times it passes (an ill-conditioned model cannot be reproduced closer than its own rounding);
  * the artifact's declared batch dimension is dynamic (a baked batch fails).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from exporter.inputs import InputSet
from exporter.errors import UnsupportedOp, first_line
from exporter.outputs import infer_task
from exporter.runners.base import Runner, as_runner

CHANNEL_RANGE_FLOOR = 0.1  # a regression channel's range counts as at least this share of the output's range


@dataclass(frozen=True)
class Tolerance:
    max_rel_err: float
    min_cosine: float
    min_top1: float
    min_miou: float = 0.99
    tie_margin: float = 1e-4  # x range: a segmentation pixel with a closer reference call is not judged
    noise_multiple: float | None = None  # fp32: errors within this multiple of the reference's fp32-vs-fp64 noise pass

    def describe(self) -> str:
        text = (
            f"|artifact - reference| <= {self.max_rel_err:g} x reference range (per channel for regression outputs), "
            f"cosine >= {self.min_cosine:g} (centred for class outputs), top-1 / pixel agreement >= {self.min_top1:g}, "
            f"class-map mIoU >= {self.min_miou:g}"
        )
        if self.noise_multiple:
            text += f"; or error <= {self.noise_multiple:g} x the reference's own fp32-vs-fp64 noise"
        return text


# One visible table of per-precision defaults; every value can be overridden on the command line.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel_err=1e-4, min_cosine=0.99999, min_top1=1.0, min_miou=0.99, tie_margin=1e-4, noise_multiple=4.0),
    "fp16": Tolerance(max_rel_err=1e-2, min_cosine=0.999, min_top1=0.99, min_miou=0.95, tie_margin=1e-2),
    "int8": Tolerance(max_rel_err=0.25, min_cosine=0.98, min_top1=0.90, min_miou=0.80, tie_margin=0.02),
}


def tolerance_for(precision: str, max_rel_err=None, min_cosine=None, min_top1=None, min_miou=None) -> Tolerance:
    base = TOLERANCES[precision]
    overrides = {"max_rel_err": max_rel_err, "min_cosine": min_cosine, "min_top1": min_top1, "min_miou": min_miou}
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Check:
    reference: str
    inputs: str
    batch_size: int
    status: str
    reason: str = ""
    output: str = ""
    task: str = ""
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    max_channel_rel_err: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    top1_decisive: int | None = None
    top5_overlap: float | None = None
    pixel_agreement: float | None = None
    pixels_decisive: int | None = None
    miou: float | None = None
    noise_rel_err: float | None = None  # the reference's own fp32-vs-fp64 error, when it was measured
    decided_by: str | None = None  # "noise" when the fp32 noise rule accepted an error above the fixed one
    judged: bool = True


METRICS = ("max_abs_err", "max_rel_err", "max_channel_rel_err", "cosine", "top1_agreement", "top5_overlap",
           "pixel_agreement", "miou", "noise_rel_err")
_WORST = {"cosine": min, "top1_agreement": min, "top5_overlap": min, "pixel_agreement": min, "miou": min}


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

    def _judged(self, output: str | None = None) -> list[Check]:
        compared = [c for c in self.checks if c.output and (output is None or c.output == output)]
        return [c for c in compared if c.judged] or compared

    def _worst(self, name: str, fn=None, output: str | None = None):
        values = [getattr(c, name) for c in self._judged(output) if getattr(c, name) is not None]
        return (fn or _WORST.get(name, max))(values) if values else None

    def output_names(self) -> list[str]:
        return list(dict.fromkeys(c.output for c in self.checks if c.output))

    def per_output(self) -> dict[str, dict]:
        """{output: its task, status and worst metrics over the judged input sets}."""
        table = {}
        for name in self.output_names():
            checks = [c for c in self.checks if c.output == name]
            failed = [c for c in checks if c.status == "fail"]
            row = {"task": checks[0].task, "status": "fail" if failed else "pass",
                   "reason": failed[0].reason if failed else ""}
            for metric in METRICS:
                row[metric] = self._worst(metric, output=name)
            if any(c.decided_by == "noise" for c in checks):
                row["decided_by"] = "noise"
            table[name] = row
        return table

    def worst_output(self) -> str | None:
        """The output that failed first, else the one closest to its error limit."""
        table = self.per_output()
        if not table:
            return None
        failed = [n for n, row in table.items() if row["status"] == "fail"]
        if failed:
            return failed[0]
        return max(table, key=lambda n: (table[n]["max_channel_rel_err"] or table[n]["max_rel_err"] or 0.0))

    def to_dict(self) -> dict:
        outputs = self.per_output()
        return {
            "status": self.status,
            "reason": self.reason,
            "precision": self.precision,
            "rule": self.tolerance.describe() if self.tolerance else None,
            "tolerance": asdict(self.tolerance) if self.tolerance else None,
            **{metric: self._worst(metric) for metric in METRICS},
            "worst_output": self.worst_output(),
            "outputs": outputs,
            "batch_sizes": sorted({c.batch_size for c in self.checks if c.output}),
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


def centred(x: np.ndarray) -> np.ndarray:
    """Logits with what softmax/argmax ignore removed: each class's mean over the pixels (class maps),
    then each sample's (pixel's) mean over the classes. A constant offset becomes 0."""
    x = x.astype(np.float64)
    if x.ndim > 2:
        x = x - x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
    return x - x.mean(axis=1, keepdims=True)


def _class_cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Centred cosine; the plain one where the reference has (almost) nothing left once centred."""
    cr, co = centred(ref), centred(out)
    left = np.linalg.norm(cr.reshape(len(cr), -1), axis=1)
    whole = np.linalg.norm(ref.reshape(len(ref), -1).astype(np.float64), axis=1)
    if np.all(left > 1e-6 * np.maximum(whole, 1e-300)):
        return float(_cosines(cr, co).min())
    return float(_cosines(ref, out).min())


def _channel_rel_err(diff: np.ndarray, ref: np.ndarray, value_range: float) -> float:
    """Worst max error / range over the channels (axis 1 of (N, C, H, W), the last axis of (N, A, K))."""
    if ref.ndim == 4:
        axes = (0, 2, 3)
    elif ref.ndim == 3:
        axes = (0, 1)
    else:
        return float(diff.max() / value_range) if diff.size else 0.0
    ranges = ref.max(axis=axes) - ref.min(axis=axes)
    ranges = np.maximum(ranges, CHANNEL_RANGE_FLOOR * value_range)
    return float((diff.max(axis=axes) / ranges).max()) if diff.size else 0.0


def _segment_metrics(ref: np.ndarray, out: np.ndarray, tol: Tolerance, value_range: float) -> dict:
    """Per-pixel argmax agreement and mIoU over the pixels whose reference call is not a near tie."""
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.concatenate([ref, ref - np.inf], axis=1)
    margin = top2[:, -1] - top2[:, -2]
    decisive = margin > tol.tie_margin * value_range
    ref_cls, out_cls = ref.argmax(axis=1)[decisive], out.argmax(axis=1)[decisive]
    metrics = {"pixels_decisive": int(decisive.sum())}
    if not decisive.any():
        return metrics
    metrics["pixel_agreement"] = float((ref_cls == out_cls).mean())
    ious = []
    for c in np.union1d(ref_cls, out_cls):
        union = np.sum((ref_cls == c) | (out_cls == c))
        ious.append(np.sum((ref_cls == c) & (out_cls == c)) / union)
    metrics["miou"] = float(np.mean(ious))
    return metrics


def compare_arrays(ref: np.ndarray, out: np.ndarray, tol: Tolerance, task: str | None = None,
                   noise: float | None = None) -> dict:
    """Metrics of one output, in float64. Returns the Check fields plus status/reason.

    ``task`` (classify / segment / dense / regress) picks the agreement metric; default: from the
    shape. ``noise``: the reference's own fp32-vs-fp64 max error / range on these inputs, which
    widens an fp32 rule that has a ``noise_multiple``.
    """
    if out.shape != ref.shape:
        return {"status": "fail", "reason": f"output shape {tuple(out.shape)} differs from reference {tuple(ref.shape)}"}
    ref64 = ref.astype(np.float64)
    out64 = out.astype(np.float64)
    if not np.isfinite(out64).all():
        bad = int((~np.isfinite(out64)).sum())
        return {"status": "fail", "reason": f"{bad} output values are NaN or infinite"}
    task = task or infer_task(ref.shape)
    diff = np.abs(out64 - ref64)
    value_range = float(ref64.max() - ref64.min()) or 1.0
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = max_abs / value_range
    classes = task in ("classify", "segment")
    cosine = _class_cosine(ref64, out64) if classes else float(_cosines(ref64, out64).min())
    metrics = {"task": task, "max_abs_err": max_abs, "max_rel_err": rel, "cosine": cosine}
    judged_rel = rel
    if not classes:
        judged_rel = metrics["max_channel_rel_err"] = _channel_rel_err(diff, ref64, value_range)
    allowed_rel, min_cosine = tol.max_rel_err, tol.min_cosine
    if noise is not None and tol.noise_multiple:
        metrics["noise_rel_err"] = noise
        allowed_rel = max(allowed_rel, tol.noise_multiple * noise)
        if judged_rel > tol.max_rel_err and judged_rel <= allowed_rel:
            metrics["decided_by"] = "noise"
            min_cosine = min(min_cosine, 1 - tol.noise_multiple * max(1 - cosine, 0.0))  # the same noise moves the cosine
    reasons = []
    if task == "classify" and ref.shape[1] > 1:
        ref_top = np.argsort(-ref64, axis=1)
        out_top = np.argsort(-out64, axis=1)
        agree = ref_top[:, 0] == out_top[:, 0]
        margin = ref64[np.arange(len(ref64)), ref_top[:, 0]] - ref64[np.arange(len(ref64)), ref_top[:, 1]]
        decisive = margin > allowed_rel * value_range
        k = min(5, ref.shape[1])
        overlap = np.mean([len(set(r[:k]) & set(o[:k])) / k for r, o in zip(ref_top, out_top)])
        metrics["top1_agreement"] = float(agree.mean())
        metrics["top1_decisive"] = int(decisive.sum())
        metrics["top5_overlap"] = float(overlap)
        if decisive.any() and float(agree[decisive].mean()) < tol.min_top1:
            reasons.append(f"top-1 agreement {float(agree[decisive].mean()):.3f} < {tol.min_top1:g}")
    elif task == "segment":
        metrics.update(_segment_metrics(ref64, out64, replace(tol, tie_margin=tol.tie_margin * allowed_rel / tol.max_rel_err), value_range))
        if metrics.get("pixel_agreement") is not None and metrics["pixel_agreement"] < tol.min_top1:
            reasons.append(f"pixel agreement {metrics['pixel_agreement']:.3f} < {tol.min_top1:g}")
        if metrics.get("miou") is not None and metrics["miou"] < tol.min_miou:
            reasons.append(f"class-map mIoU {metrics['miou']:.3f} < {tol.min_miou:g}")
    if judged_rel > allowed_rel or math.isnan(judged_rel):
        where = "x range" if classes else "x its channel's range"
        noise_text = f" (and > {tol.noise_multiple:g} x the reference's fp32 noise {noise:.3g})" if noise is not None and tol.noise_multiple else ""
        reasons.insert(0, f"max error {judged_rel:.3g} {where} > {tol.max_rel_err:g}{noise_text}")
    if cosine < min_cosine:
        reasons.append(f"{'centred ' if classes else ''}cosine {cosine:.6f} < {min_cosine:g}")
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
    spec=None,
) -> Verdict:
    """Run the artifact and each reference runner on every input set and judge every output with ``tolerance``.

    ``spec`` (a ModelSpec) gives each output's task; without it the task follows the shape. An
    artifact whose first output is a function of the logits (a Core ML classifier's
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
            try:
                expected = reference.infer(inputs.array)
            except Exception as exc:  # noqa: BLE001 - a reference that cannot run is an input problem
                checks.append(Check(ref_name, inputs.name, inputs.batch_size, "fail",
                                    f"the reference failed on these inputs: {first_line(exc)}", judged=inputs.judged))
                continue
            try:
                actual = artifact.infer(inputs.array)
            except UnsupportedOp as exc:
                return Verdict.skipped(str(exc), precision)
            except Exception as exc:  # noqa: BLE001 - runtimes raise their own types
                checks.append(Check(ref_name, inputs.name, inputs.batch_size, "fail",
                                    f"the artifact failed at batch {inputs.batch_size}: {first_line(exc)}", judged=inputs.judged))
                continue
            pairs, problem = pair_outputs(expected, actual, transform is not None)
            if problem:
                checks.append(Check(ref_name, inputs.name, inputs.batch_size, "fail", problem, judged=inputs.judged))
                continue
            checks.extend(_compare_outputs(pairs, reference, inputs, ref_name, tolerance, transform, spec))
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        return Verdict("fail", failure_reason(failed[0], checks), precision, tolerance, checks)
    return Verdict("pass", "", precision, tolerance, checks)


def failure_reason(check: Check, checks: list[Check]) -> str:
    """'pytorch / random b=4 / output scores: max error ...' (the output named when there are several)."""
    where = f" / output {check.output}" if check.output and len({c.output for c in checks if c.output}) > 1 else ""
    return f"{check.reference} / {check.inputs}{where}: {check.reason}"


def pair_outputs(expected: dict, actual: dict, transformed: bool = False) -> tuple[list, str]:
    """[(name, reference array, artifact array)] for every reference output, and a problem sentence or "".

    By name when the artifact has every reference name; by position when it renamed them (same
    count); a Core ML classifier's probabilities (``transformed``) pair with the first output.
    """
    if transformed:
        name = next(iter(expected))
        return [(name, expected[name], next(iter(actual.values())))], ""
    if all(name in actual for name in expected):
        return [(name, expected[name], actual[name]) for name in expected], ""
    numeric = {k: v for k, v in actual.items() if getattr(np.asarray(v), "dtype", None) is not None and np.asarray(v).dtype != object}
    if len(numeric) == len(expected):
        return [(name, value, art) for (name, value), art in zip(expected.items(), numeric.values())], ""
    missing = [n for n in expected if n not in actual]
    return [], (f"the artifact returns {len(actual)} output(s) ({', '.join(actual) or 'none'}) but the reference returns "
                f"{len(expected)} ({', '.join(expected)}); missing: {', '.join(missing)}")


def _compare_outputs(pairs, reference, inputs: InputSet, ref_name: str, tolerance: Tolerance, transform, spec) -> list[Check]:
    checks = []
    noise = None
    for name, ref_out, art_out in pairs:
        if transform is not None:
            ref_out = transform(ref_out)
        declared = spec.output_spec(name) if spec is not None else None
        task = declared.task if declared is not None else None
        metrics = compare_arrays(ref_out, np.asarray(art_out), tolerance, task)
        if _fails_only_on_error(metrics, tolerance) and inputs.judged:
            if noise is None:
                noise = _reference_noise(reference, inputs.array)
            if noise.get(name) is not None:
                metrics = compare_arrays(ref_out, np.asarray(art_out), tolerance, task, noise=noise[name])
        check = Check(ref_name, inputs.name, inputs.batch_size, "pass", output=name, judged=inputs.judged)
        if not inputs.judged and "max_abs_err" in metrics:
            metrics.update(status="pass", reason="runs, shape and finiteness checked; numbers not judged on these inputs")
        for key, value in metrics.items():
            setattr(check, key, value)
        checks.append(check)
    return checks


def _fails_only_on_error(metrics: dict, tol: Tolerance) -> bool:
    """An fp32 rule with a noise multiple, failed by the size of the error (not by a shape, NaN or a flipped class)."""
    return bool(tol.noise_multiple) and metrics.get("status") == "fail" and metrics["reason"].startswith("max error")


def _reference_noise(reference, batch: np.ndarray) -> dict:
    """{output: max |fp32 - fp64| / range} of the reference on ``batch``; {} when it cannot run in fp64."""
    measure = getattr(reference, "numeric_noise", None)
    if not callable(measure):
        return {}
    try:
        return measure(batch)
    except Exception:  # noqa: BLE001 - a model that cannot run in float64 keeps the fixed rule
        return {}


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
        return Verdict("fail", failure_reason(failed[0], checks), verdict.precision, verdict.tolerance, checks)
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
