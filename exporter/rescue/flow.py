"""`--fallback auto` on any int8 row: the shared search (exporter/rescue/search.py) with the row's way of
keeping layers in float (its ``rescue`` hook), then the artifact built from what the search found,
verified in its own runtime, and installed only when it passes.

Attempts are built in a private folder beside the output; only the final artifact reaches the
output path, with ``details.float_fallback``: the fix that decided, the layers kept in float (the
user's module names), the ranking, every step's held-out metric and the float share. When nothing
within the budget passes, the best attempt is what is built: refused (exit 1) with the search
summarised, kept only with --keep-failed.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from exporter.rescue.search import Fix, Measure, Plan, Score, float_budget, score_of, search


@dataclass
class RescueTarget:
    """What an int8 target gives the rescue (its row's ``rescue`` hook builds it from the request)."""

    layers: list[str]  # the weighted layers it can keep in float, by the user's module names, in execution order
    options_for: Callable[[tuple[str, ...], Fix], Any]  # the row's options with these layers in float and this fix
    fixes: list[Fix] = field(default_factory=list)  # cheap fixes it offers, cheapest first
    measure: Measure | None = None  # a quicker measure than building the artifact (the final one is still verified)
    close: Callable[[], None] | None = None  # removes what the target made for its measure (a private folder)


class HeldOut:
    """A quick measure's data and judge: the calibration split for a fix (seeded, as the stage's), and the verdict of
    a runner against the checkpoint on the held-out part, by the int8 rule."""

    def __init__(self, req):
        from dataclasses import replace as replace_fields

        from exporter.runners.torch import TorchRunner

        self.req, self.spec = req, req.loaded.spec
        self.module = req.loaded.module.eval()
        self.reference = {"pytorch": TorchRunner(self.module)}
        self.tolerance = replace_fields(req.verify, precision="int8").tolerance()
        self._splits: dict = {}

    def calibration(self, fix: Fix):
        """(the calibration samples, [the held-out input set]) for this fix's sample count."""
        from exporter.inputs import InputSet, calibration_split, open_source

        data = calibration_for(self.req, fix)
        if data.samples not in self._splits:
            source = open_source(data.data, self.spec, self.req.verify.seed)
            calib, held = calibration_split(source, data.samples, data.holdout)
            self._splits[data.samples] = (calib, [InputSet(f"held-out ({len(held)})", held.take())] if held is not None else [])
        return self._splits[data.samples]

    def judge(self, runner, fix: Fix) -> Score:
        from exporter.verify import verify

        return score_of(verify(runner, self.reference, self.calibration(fix)[1], self.tolerance, "int8", spec=self.spec))


def calibration_for(req, fix: Fix):
    """The request's calibration data, with a fix's larger sample count."""
    if fix.samples_factor == 1:
        return req.calibration
    return req.calibration.model_copy(update={"samples": req.calibration.samples * fix.samples_factor})


def top1_drop(result, max_drop: float | None) -> float | None:
    """Top-1 points lost on --eval data when more than --max-drop allows, else None."""
    evaluation = result.details.get("eval")
    if max_drop is None or not evaluation:
        return None
    drop = evaluation["results"][result.path.name]["top1_drop_points"]
    return drop if drop > max_drop else None


def plain_options(options, update: dict):
    """Options for one attempt: the rescue's own settings off (an attempt never searches)."""
    off = {"fallback": "none", "max_float_layers": None, "max_float_share": None}
    if "max_drop" in type(options).model_fields:
        off["max_drop"] = None
    return options.model_copy(update={**update, **off})


def by_building(req, attempt, target: RescueTarget, work: Path, output: Path) -> Measure:
    """The default measure: build the attempt with the row's own flow in ``work`` and read its verdict."""
    numbers = itertools.count()

    def measure(floated: tuple[str, ...], fix: Fix) -> Score:
        trial = replace(
            req,
            options=target.options_for(floated, fix),
            calibration=calibration_for(req, fix),
            output=work / f"attempt{next(numbers)}-{output.name}",
            keep_failed=True,
            write=False,
            progress=lambda _: None,
        )
        result = attempt(trial)[-1]
        score = score_of(result.verification)
        drop = top1_drop(result, getattr(req.options, "max_drop", None))
        if drop is not None:
            return replace(score, passed=False, reason=f"top-1 drop {drop:.2f} points over --max-drop")
        return score

    return measure


def rescue(req, attempt, spec) -> list:
    """Search, then build the final artifact at the real output (``attempt(request) -> [ArtifactResult]``)."""
    from exporter.kinds import resolve
    from exporter.pipeline import default_output

    target: RescueTarget = resolve(req.kind.rescue)(req)
    options = req.options
    budget = float_budget(len(target.layers), options.max_float_layers, options.max_float_share)
    output = Path(req.output or default_output(req.source, req.kind.name, options))
    output.parent.mkdir(parents=True, exist_ok=True)  # as the stage's own staging folder would be
    work = Path(tempfile.mkdtemp(prefix=".cnnexport-rescue-", dir=output.parent))
    try:
        measure = target.measure or by_building(req, attempt, target, work, output)
        req.progress(f"--fallback auto: {len(target.layers)} weighted layers, float budget {budget[0]} ({budget[1]})")
        plan = search(target.layers, measure, target.fixes, budget, req.progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if target.close is not None:
            target.close()
    return install(req, attempt, target, plan, spec)


def install(req, attempt, target: RescueTarget, plan: Plan, spec) -> list:
    """The plan built at the output by the row's flow; refused with the search summarised when it fails."""
    from exporter.report import install_report

    final = attempt(
        replace(req, options=target.options_for(plan.floated, plan.fix), calibration=calibration_for(req, plan.fix), write=False)
    )
    last = final[-1]
    record = plan.to_dict()
    record["installed"] = bool(last.files) and last.verification.status == "pass"
    if plan.passed:
        req.progress(f"--fallback auto: {outcome(plan)}")
    last.details["float_fallback"] = record
    if last.verification.status != "pass":
        last.verification.status = "fail"
        last.verification.reason = "; ".join(part for part in (last.verification.reason, summary(plan)) if part)
    install_report(last, req.loaded, spec, req.write)
    return final


def outcome(plan: Plan) -> str:
    """What decided a passing search, in words."""
    if plan.decided_by == "plain":
        return "plain int8 passes; nothing to rescue"
    fix = f" with {plan.fix.label}" if plan.fix.label != "none" else ""
    if not plan.floated:
        return f"passes{fix}, every layer in int8 ({plan.attempts} attempts)"
    return (
        f"passes{fix} with {len(plan.floated)} of {plan.layers_total} weighted layers in float "
        f"({', '.join(plan.floated)}; {plan.attempts} attempts)"
    )


def summary(plan: Plan) -> str:
    """What the search tried and the best it reached, for a refusal."""
    tried = f"{len(plan.fixes)} cheap fix(es)" + (f", {len(plan.ranking)} layers ranked" if plan.ranking else "")
    floated = f" with {len(plan.floated)} layer(s) in float ({', '.join(plan.floated)})" if plan.floated else ""
    fix = f" and fix {plan.fix.label}" if plan.fix.label != "none" else ""
    return (
        f"--fallback auto found nothing passing within the float budget of {plan.budget} ({plan.budget_from}): "
        f"tried {tried} in {plan.attempts} attempts; best held-out cosine {plan.best.cosine:.4f}{floated}{fix}"
    )


def build_from_checkpoint(req) -> list:
    """The flow of an int8-capable row made from the checkpoint (ExecuTorch, LiteRT): the rescue with --fallback
    auto, else the plain checkpoint flow."""
    from exporter.build import from_checkpoint

    if req.options.fallback != "auto":
        return from_checkpoint(req)
    if req.loaded is None:
        from exporter.loading.checkpoint import load_checkpoint

        req = replace(req, loaded=load_checkpoint(req.source, progress=req.progress))
    return rescue(req, from_checkpoint, req.loaded.spec)


def build_from_onnx(req) -> list:
    """The flow of an int8-capable row made from the verified ONNX (OpenVINO, the ONNX int8 rows): the rescue with
    --fallback auto, else the plain ONNX flow."""
    from exporter.build import from_onnx
    from exporter.pipeline import onnx_source

    if req.options.fallback != "auto":
        return from_onnx(req)
    spec = onnx_source(req.source, req.output, req.loaded, req.kind.suffix_of(req.options), req.kind.kind)[2]
    return rescue(req, from_onnx, spec)  # each attempt is from_onnx with fallback "none"
