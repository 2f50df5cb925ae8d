"""The INT8 rescue every int8 target shares (`--fallback auto`): cheap fixes first, then the layers that
measurably matter most kept in float, the fewest that pass.

1. The plain attempt; if it passes, nothing else is tried.
2. Cheap fixes, each alone (per-tensor weights, another calibration method, symmetric activations,
   twice the calibration samples: what the target offers). The first that passes decides; else
   the best of them (by held-out cosine) is what the layer search starts from, when it beats plain.
3. Sensitivity, measured: each layer quantized alone, everything else float, on the held-out
   samples; its damage is how far that takes the held-out cosine below 1. A layer quantized
   alone has its input, weights and output in int8, so a crushed activation shows at both the
   layer writing it and the one reading it, and both rank high (keeping it float needs both).
   Quantizing one at a time rather than floating one at a time: where several layers each break
   the output on their own (three crushed activations), floating any one of them alone moves
   nothing and the ranking is noise (measured on a Conv-BN-Hardswish net). With more than
   RANK_ALL layers, blocks (module-path prefixes) are measured first and the layers of the
   BLOCKS_OPENED most damaging blocks after (NNCF's accuracy control ranks by measured effect
   too, not by where the error first shows).
4. Growth: the k most damaging layers kept in float, k = 1, 2, ... up to the budget, until an
   attempt passes.

The greedy search (exporter/rescue/fallback.py) keeps the first layer whose own output leaves the
rule: a loss spread thinly over many layers names none, or a layer that matters little. Here the
measure is the model's output on held-out data, so the layer that moves it most goes first.

``measure(floated, fix)`` is the target's: quantize with these layers (user's module names) in
float and this fix, run the held-out samples, judge by the int8 rule. It may be a proxy (the
pt2e model in PyTorch for ExecuTorch); the flow verifies the final artifact in its own runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

RANK_ALL = 48  # up to this many layers, each is measured alone; beyond, blocks first
BLOCKS_OPENED = 3
DEFAULT_FLOAT_LAYERS = 2
DEFAULT_FLOAT_SHARE = 0.25


@dataclass(frozen=True)
class Fix:
    """A cheap fix: a label for people and the option / calibration changes that make it."""

    label: str
    options: dict = field(default_factory=dict)
    samples_factor: int = 1  # calibration samples multiplied by this


PLAIN = Fix("none")


@dataclass(frozen=True)
class Score:
    """One attempt, measured on the held-out samples by the int8 rule."""

    passed: bool
    cosine: float  # the worst output's cosine (centred for class outputs): what ranks attempts
    top1: float | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "status": "pass" if self.passed else "fail",
            "cosine": round(self.cosine, 5),
            **({"top1_agreement": round(self.top1, 4)} if self.top1 is not None else {}),
            **({"reason": self.reason} if self.reason and not self.passed else {}),
        }


Measure = Callable[[tuple[str, ...], Fix], Score]


QUALITY = ("cosine", "f1", "miou", "pixel_agreement", "top1_agreement")  # what ranks attempts, first that a task measured


def score_of(verdict) -> Score:
    """A Verdict (exporter/verify.py) as a Score: its worst cosine, or for outputs judged without one (a detector's
    decoded boxes) its F1 / mIoU / agreement, so the ranking follows what the task measures."""
    values = verdict.to_dict()
    measured = next((float(values[name]) for name in QUALITY if values.get(name) is not None), -1.0)
    return Score(verdict.status == "pass", measured, values.get("top1_agreement"), verdict.reason)


def float_budget(total: int, layers: int | None, share: float | None) -> tuple[int, str]:
    """The most weighted layers the installed model may keep in float, and where that number comes from."""
    if layers is None and share is None:
        budget = min(total, max(DEFAULT_FLOAT_LAYERS, int(DEFAULT_FLOAT_SHARE * total)))
        return budget, (
            f"the default budget (the larger of {DEFAULT_FLOAT_LAYERS} layers and {DEFAULT_FLOAT_SHARE:.0%} of the {total})"
        )
    limits = []
    if layers is not None:
        limits.append((layers, f"--max-float-layers {layers}"))
    if share is not None:
        limits.append((int(share * total), f"--max-float-share {share:g} ({int(share * total)} of the {total})"))
    return min(limits)


@dataclass
class Plan:
    """What the search found: the fix and layers to build with, whether that passed, and every step measured."""

    fix: Fix
    floated: tuple[str, ...]
    passed: bool
    decided_by: str  # "plain" | "fix" | "layers" | "nothing passed"
    plain: Score
    best: Score
    budget: int
    budget_from: str
    layers_total: int
    fixes: list[dict] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    attempts: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "search": "units ranked by measured damage, each quantized alone",
            "decided_by": self.decided_by,
            "fix": self.fix.label,
            "layers": list(self.floated),
            "kept_in_float": len(self.floated),
            "weighted_layers": self.layers_total,
            "share": round(len(self.floated) / self.layers_total, 3) if self.layers_total else 0.0,
            "budget": self.budget,
            "budget_from": self.budget_from,
            "plain": self.plain.to_dict(),
            "fixes": self.fixes,
            "ranking": self.ranking,
            "steps": self.steps,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class _Counter:
    measure: Measure
    progress: Callable[[str], None]
    attempts: int = 0

    def __call__(self, floated: tuple[str, ...], fix: Fix) -> Score:
        self.attempts += 1
        return self.measure(floated, fix)


def search(layers: list[str], measure: Measure, fixes: list[Fix], budget: tuple[int, str], progress=lambda _: None) -> Plan:
    """Cheap fixes, then the fewest most damaging layers in float (module docstring); never more than the budget.

    ``layers``: the weighted layers (module names) the target can keep in float, in execution order.
    """
    started = time.perf_counter()
    run = _Counter(measure, progress)
    plain = run((), PLAIN)
    plan = Plan(PLAIN, (), plain.passed, "plain", plain, plain, budget[0], budget[1], len(layers))
    if not plain.passed:
        _try_fixes(plan, run, fixes)
    if not plan.passed and budget[0] > 0 and layers:
        _grow(plan, run, layers)
    if not plan.passed:
        plan.decided_by = "nothing passed"
    plan.attempts, plan.seconds = run.attempts, time.perf_counter() - started
    return plan


def _try_fixes(plan: Plan, run: _Counter, fixes: list[Fix]) -> None:
    """Each fix alone; the first that passes decides, else the best beats plain as the layer search's start."""
    for fix in fixes:
        score = run((), fix)
        plan.fixes.append({"fix": fix.label, **score.to_dict()})
        run.progress(f"--fallback auto: fix {fix.label}: {'pass' if score.passed else 'fail'} (cosine {score.cosine:.4f})")
        if score.passed:
            plan.fix, plan.passed, plan.decided_by, plan.best = fix, True, "fix", score
            return
        if score.cosine > plan.best.cosine:
            plan.fix, plan.best = fix, score


def _damages(run: _Counter, groups: dict[str, list[str]], every: list[str], fix: Fix) -> list[dict]:
    """Each group quantized alone (every other layer in float): its measured damage to the held-out cosine, worst first."""
    measured: list[tuple[float, dict]] = []
    for name, members in groups.items():
        score = run(tuple(layer for layer in every if layer not in members), fix)
        damage = 1.0 - score.cosine
        row: dict = {"layer": name, "cosine_alone": round(score.cosine, 5), "damage": round(damage, 5)}
        if members != [name]:
            row["layers"] = len(members)
        measured.append((damage, row))
        run.progress(f"--fallback auto: only {name} in int8: cosine {score.cosine:.4f}")
    return [row for _, row in sorted(measured, key=lambda pair: -pair[0])]


def blocks(names: list[str], most: int = RANK_ALL // 2) -> dict[str, list[str]]:
    """Names grouped by the deepest module-path prefix that gives at most ``most`` groups (order kept)."""
    depth = max(len(name.split(".")) for name in names)
    for level in range(depth, 0, -1):
        grouped: dict[str, list[str]] = {}
        for name in names:
            grouped.setdefault(".".join(name.split(".")[:level]), []).append(name)
        if len(grouped) <= most:
            return grouped
    return {"": list(names)}


def rank(run: _Counter, layers: list[str], fix: Fix) -> list[dict]:
    """Layers by measured damage, worst first. With many: blocks first; the layers of the BLOCKS_OPENED worst
    blocks measured one by one, the other blocks' layers unmeasured, each ranked by its block's damage (so growth
    reaches a damaging block that was not opened before the harmless layers of one that was)."""
    if len(layers) <= RANK_ALL:
        return _damages(run, {name: [name] for name in layers}, layers, fix)
    grouped = blocks(layers)
    by_block = _damages(run, grouped, layers, fix)
    opened = [name for row in by_block[:BLOCKS_OPENED] for name in grouped[row["layer"]]]
    rest = [
        {"layer": name, "block": row["layer"], "damage": row["damage"]}
        for row in by_block[BLOCKS_OPENED:]
        for name in grouped[row["layer"]]
    ]
    return sorted(_damages(run, {name: [name] for name in opened}, layers, fix) + rest, key=lambda row: -row["damage"])


def _grow(plan: Plan, run: _Counter, layers: list[str]) -> None:
    """The k most damaging layers in float, k = 1, 2, ... up to the budget, until an attempt passes."""
    plan.ranking = rank(run, layers, plan.fix)
    ordered = [row["layer"] for row in plan.ranking]
    for k in range(1, min(plan.budget, len(ordered)) + 1):
        floated = tuple(ordered[:k])
        score = run(floated, plan.fix)
        plan.steps.append({"kept_in_float": k, "added": floated[-1], **score.to_dict()})
        run.progress(
            f"--fallback auto: {k} layer(s) in float (+{floated[-1]}): {'pass' if score.passed else 'fail'} "
            f"(cosine {score.cosine:.4f})"
        )
        if score.cosine > plan.best.cosine or score.passed:
            plan.best, plan.floated = score, floated
        if score.passed:
            plan.passed, plan.decided_by = True, "layers"
            return
