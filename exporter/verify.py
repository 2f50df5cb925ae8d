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

from dataclasses import asdict, dataclass, field

import numpy as np

from exporter.compare import (  # noqa: F401 - the rule's table and per-output metrics, re-exported
    TOLERANCES,
    Tolerance,
    compare_arrays,
    tolerance_for,
)
from exporter.errors import UnsupportedOp, first_line
from exporter.inputs import InputSet
from exporter.runners.base import Runner, as_runner


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
    # detect outputs (exporter/tasks/detect.py): per-part raw errors and the agreement of decoded boxes
    box_err: float | None = None
    score_err: float | None = None
    reference_boxes: int | None = None
    f1: float | None = None
    box_iou: float | None = None
    score_diff: float | None = None
    decided_by: str | None = None  # "noise" when the fp32 noise rule accepted an error above the fixed one
    judged: bool = True


METRICS = (
    "max_abs_err",
    "max_rel_err",
    "max_channel_rel_err",
    "cosine",
    "top1_agreement",
    "top5_overlap",
    "pixel_agreement",
    "miou",
    "noise_rel_err",
    "box_err",
    "score_err",
    "reference_boxes",
    "f1",
    "box_iou",
    "score_diff",
)
_WORST = {
    "cosine": min,
    "top1_agreement": min,
    "top5_overlap": min,
    "pixel_agreement": min,
    "miou": min,
    "f1": min,
    "box_iou": min,
}


@dataclass
class Verdict:
    status: str  # "pass" | "fail" | "skipped"
    reason: str = ""
    precision: str = "fp32"
    tolerance: Tolerance | None = None
    checks: list[Check] = field(default_factory=list)
    first_divergent: dict | None = None  # a failed ONNX artifact: the first layer past the rule (exporter.rescue.debug)

    @classmethod
    def skipped(cls, reason: str, precision: str = "fp32") -> Verdict:
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
            row = {"task": checks[0].task, "status": "fail" if failed else "pass", "reason": failed[0].reason if failed else ""}
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
        return max(table, key=lambda n: table[n]["max_channel_rel_err"] or table[n]["max_rel_err"] or 0.0)

    def rule(self) -> str | None:
        """The pass rule in words: each judged output's task says its own (exporter/tasks/)."""
        if self.tolerance is None:
            return None
        from exporter import tasks

        return tasks.describe_rule(self.tolerance, {c.task for c in self.checks if c.output})

    def to_dict(self) -> dict:
        outputs = self.per_output()
        return {
            "status": self.status,
            "reason": self.reason,
            "precision": self.precision,
            "rule": self.rule(),
            "tolerance": asdict(self.tolerance) if self.tolerance else None,
            **{metric: self._worst(metric) for metric in METRICS},
            "worst_output": self.worst_output(),
            "outputs": outputs,
            "batch_sizes": sorted({c.batch_size for c in self.checks if c.output}),
            "checks": [asdict(c) for c in self.checks],
            **({"first_divergent": self.first_divergent} if self.first_divergent else {}),
        }


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
    batch_dim = artifact.batch_dim
    transform_name = artifact.reference_transform
    transform = REFERENCE_TRANSFORMS.get(transform_name) if transform_name else None
    checks = _declaration_checks(artifact, batch_dim, transform_name, transform)
    for ref_name, reference in references.items():
        for inputs in input_sets:
            try:
                expected = reference.infer(inputs.array)
            except Exception as exc:  # noqa: BLE001 - a reference that cannot run is an input problem
                checks.append(
                    Check(
                        ref_name,
                        inputs.name,
                        inputs.batch_size,
                        "fail",
                        f"the reference failed on these inputs: {first_line(exc)}",
                        judged=inputs.judged,
                    )
                )
                continue
            try:
                actual = artifact.infer(inputs.array)
            except UnsupportedOp as exc:
                return Verdict.skipped(str(exc), precision)
            except Exception as exc:  # noqa: BLE001 - runtimes raise their own types
                checks.append(
                    Check(
                        ref_name,
                        inputs.name,
                        inputs.batch_size,
                        "fail",
                        f"the artifact failed at batch {inputs.batch_size}: {first_line(exc)}",
                        judged=inputs.judged,
                    )
                )
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


def _declaration_checks(artifact: Runner, batch_dim, transform_name: str | None, transform) -> list[Check]:
    """Failures the artifact declares before it runs: outputs cnnexport cannot compare, a batch baked into the input."""
    checks: list[Check] = []
    if transform_name and transform is None:
        checks.append(
            Check(
                "declaration",
                "outputs",
                0,
                "fail",
                f"the artifact's outputs are {transform_name!r} of the logits, which cnnexport cannot compare",
            )
        )
    if isinstance(batch_dim, int) and batch_dim != artifact.requested_fixed_batch:
        checks.append(
            Check(
                "declaration", "input signature", batch_dim, "fail", f"the batch dimension is fixed to {batch_dim}, not dynamic"
            )
        )
    return checks


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
    numeric = {k: v for k, v in actual.items() if np.asarray(v).dtype != object}  # not a Core ML classLabel
    if len(numeric) == len(expected):
        return [(name, value, art) for (name, value), art in zip(expected.items(), numeric.values())], ""
    missing = [n for n in expected if n not in actual]
    return [], (
        f"the artifact returns {len(actual)} output(s) ({', '.join(actual) or 'none'}) but the reference returns "
        f"{len(expected)} ({', '.join(expected)}); missing: {', '.join(missing)}"
    )


def _compare_outputs(pairs, reference, inputs: InputSet, ref_name: str, tolerance: Tolerance, transform, spec) -> list[Check]:
    checks = []
    exact = None
    for name, ref_out, art_out in pairs:
        if transform is not None:
            ref_out = transform(ref_out)
        declared = spec.output_spec(name) if spec is not None else None
        task = declared.task if declared is not None else None
        image_size = max(spec.height, spec.width) if spec is not None else None
        metrics = compare_arrays(ref_out, np.asarray(art_out), tolerance, task, image_size=image_size)
        if _fails_only_on_error(metrics, tolerance) and inputs.judged:
            if exact is None:
                exact = _exact_outputs(reference, inputs.array)
            if name in exact:
                own = compare_arrays(transform(exact[name]) if transform else exact[name], ref_out, tolerance, task)
                if "max_rel_err" in own:
                    noise = own.get("max_channel_rel_err") or own["max_rel_err"]
                    metrics = compare_arrays(
                        ref_out, np.asarray(art_out), tolerance, task, noise=noise, noise_cosine=own["cosine"]
                    )
        check = Check(ref_name, inputs.name, inputs.batch_size, "pass", output=name, judged=inputs.judged)
        if not inputs.judged and "max_abs_err" in metrics:
            metrics.update(status="pass", reason="runs, shape and finiteness checked; numbers not judged on these inputs")
        for key, value in metrics.items():
            setattr(check, key, value)
        checks.append(check)
    return checks


def _fails_only_on_error(metrics: dict, tol: Tolerance) -> bool:
    """An fp32 rule with a noise multiple, failed by the size of the error (not by a shape or NaN)."""
    return bool(tol.noise_multiple) and metrics.get("status") == "fail" and metrics["reason"].startswith("max error")


def _exact_outputs(reference, batch: np.ndarray) -> dict:
    """The reference's float64 outputs on ``batch``; {} when it has none (an artifact) or cannot run in float64."""
    measure = getattr(reference, "exact_outputs", None)
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
    if theirs.resize != spec.resize:  # a letterboxing model fed stretched images sees other pictures
        differences.append(f"resize {theirs.resize or 'crop'} vs {spec.resize or 'crop'}")
    if not differences:
        return Check("metadata", "stored input spec", 0, "pass")
    return Check(
        "metadata", "stored input spec", 0, "fail", "artifact metadata disagrees with the reference: " + "; ".join(differences)
    )


def finish(verdict: Verdict, extra: list[Check | None]) -> Verdict:
    """Fold extra checks (metadata, ...; None where one did not apply) into a verdict."""
    found = [c for c in extra if c is not None]
    if not found or verdict.status == "skipped":
        return verdict
    checks = found + verdict.checks
    failed = [c for c in verdict.checks + found if c.status == "fail"]  # the comparison's own reason (a baked batch, ...) first
    if failed:
        return Verdict("fail", failure_reason(failed[0], checks), verdict.precision, verdict.tolerance, checks)
    return Verdict(verdict.status, verdict.reason, verdict.precision, verdict.tolerance, checks)
