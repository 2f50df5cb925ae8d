"""The greedy INT8 rescue (`quantize --fallback greedy`): the first divergent layer kept in float, round by round.

The search before ranking (`--fallback auto` is exporter/rescue/search.py); kept to compare with it.

Quantize; verify on the held-out split; while it fails, name the first divergent layer
(exporter.rescue.debug) and keep it in float — when the layer is named for the channels its int8
output crushes, it and the layers reading that output, so the tensor stays float (onnxruntime
quantizes a tensor for its producer and for each reader) — and quantize again. With --eval and
--max-drop, a model that passes the rule but loses more top-1 points than allowed also gives up
its worst layer. It stops, failing with the reason, before
more than MAX_FLOAT_SHARE of the weighted layers would stay in float. Attempts are built in a
private folder; only the final model is installed, with `details.float_fallback`: the layers,
why each was kept, and the speed cost measured against the all-int8 attempt.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from exporter.rescue.flow import top1_drop
from exporter.rescue.search import float_budget

MAX_ROUNDS = 12


def _held_out(req, spec):
    from exporter.inputs import calibration_split, open_source

    _, held = calibration_split(
        open_source(req.calibration.data, spec, req.verify.seed), req.calibration.samples, req.calibration.holdout
    )
    return held.take(64) if held is not None else None


def _next(result, table: list, excluded: list[str], max_drop_hit: bool) -> list[tuple[str, str]]:
    """(node, why) to keep in float next."""
    from exporter.rescue.debug import describe, first_divergent

    first = result.verification.first_divergent
    if first and "node" in first and not max_drop_hit:
        if first["status"] == "pass":  # its int8 output crushes channels: it and its readers keep that tensor float
            readers = [layer.node for layer in table if first["node"] in layer.upstream]
            picked = [(first["node"], f"its int8 output crushes channels (worst channel off by {first['channel_err']:.2f}x)")]
            picked += [(n, f"reads {first['module']}'s output") for n in readers]
            picked = [(n, why) for n, why in picked if n not in excluded]
            if picked:
                return picked
        elif first["node"] not in excluded:
            return [(first["node"], describe(first).split("; ")[0])]
    tolerance = result.verification.tolerance
    candidates = [layer for layer in table if layer.node not in excluded]
    if not candidates:
        return []
    named = first_divergent(candidates, tolerance) if tolerance else None
    worst = named or max(candidates, key=lambda layer: layer.max_rel_err)
    why = "loses the most on the held-out split" + (" (top-1 drop over --max-drop)" if max_drop_hit else "")
    return [(worst.node, f"{why}: max err/range {worst.max_rel_err:.3g}")]


def _images_per_second(path: Path, batch, seconds: float = 1.0) -> float:
    from exporter.targets.onnx.runner import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path)
    runner.infer(batch)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        runner.infer(batch)
        runs += 1
    return runs * len(batch) / (time.perf_counter() - started)


def _tried(round_: int, kept: int, result, drop: float | None) -> dict:
    verdict = result.verification.to_dict()
    return {
        "round": round_ + 1,
        "kept_in_float": kept,
        "status": result.verification.status,
        "cosine": verdict["cosine"],
        "top1_agreement": verdict["top1_agreement"],
        **({"top1_drop_points": round(drop, 2)} if drop is not None else {}),
    }


def _crushed(result) -> str | None:
    """The layer whose int8 output has a channel dominating the rest, when verification named one."""
    first = result.verification.first_divergent
    if first and first.get("status") == "pass" and "channel_err" in first:
        return first.get("module") or first.get("node")
    return None


def _stop_message(why: str, tries: list[dict], budget: int, budget_from: str, crushed: str | None, equalize: bool) -> str:
    """What --fallback greedy tried, the best it reached, and what to change."""
    scored = [t for t in tries if t["cosine"] is not None]
    best = max(scored, key=lambda t: (t["status"] == "pass", t["cosine"])) if scored else None
    reached = (
        f"; best: cosine {best['cosine']:.4f}, top-1 agreement {best['top1_agreement']:.3f} with "
        f"{best['kept_in_float']} layer(s) in float"
        if best and best["top1_agreement"] is not None
        else f"; best: cosine {best['cosine']:.4f} with {best['kept_in_float']} layer(s) in float"
        if best
        else ""
    )
    rounds = ", ".join(str(t["kept_in_float"]) for t in tries)
    hint = (
        f"; --equalize is worth a try: {crushed}'s int8 output has one channel that crushes the others"
        if crushed and not equalize
        else ""
    )
    return (
        f"--fallback greedy stopped: {why} (tried {len(tries)} round(s) with {rounds} layer(s) in float{reached}; "
        f"budget {budget} from {budget_from}){hint}"
    )


@dataclass
class _Search:
    """What --fallback greedy carries from round to round: the layers kept in float and why, and what each try reached."""

    total: int  # weighted layers in the model
    budget: int
    budget_from: str
    excluded: list[str] = field(default_factory=list)
    reasons: list[dict] = field(default_factory=list)
    tries: list[dict] = field(default_factory=list)
    first_path: Path | None = None  # the all-int8 attempt, the speed baseline
    crushed: str | None = None


def quantize_with_fallback(req, attempt) -> list:
    """``attempt(request) -> [ArtifactResult]`` quantizes once; returns the final, installed model (or the last failure)."""
    from exporter.errors import BadInputError
    from exporter.pipeline import onnx_source
    from exporter.rescue.debug import onnx_layers

    if req.loaded is None:
        raise BadInputError(
            "--fallback greedy measures every layer against PyTorch: pass --checkpoint CKPT (or quantize the checkpoint)"
        )
    _, _, spec, output = onnx_source(req.source, req.output, req.loaded, req.kind.suffix_of(req.options), req.kind.kind)
    total = len(onnx_layers(req.source)[1])
    search = _Search(total, *float_budget(total, req.options.max_float_layers, req.options.max_float_share))
    held = _held_out(req, spec)
    work = Path(tempfile.mkdtemp(prefix=".cnnexport-fallback-", dir=output.parent))
    try:
        options, stopped = _rounds(req, attempt, search, held, work, output.suffix)
        if stopped is not None:
            return stopped
        return _install(req, attempt, options, search, held, spec)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rounds(req, attempt, search: _Search, held, work: Path, suffix: str) -> tuple[Any, list | None]:
    """Quantize in ``work``, one more layer (or group) in float each round, until a try passes within the budget.

    (the options that passed, None), or (None, [the failed result saying why it stopped]).
    """
    from exporter.rescue.debug import layer_table

    for round_ in range(MAX_ROUNDS):
        options = req.options.model_copy(
            update={
                "exclude": [*req.options.exclude, *search.excluded],
                "fallback": "none",
                "max_drop": None,
                "max_float_layers": None,
                "max_float_share": None,
            }
        )
        trial = replace(req, options=options, output=work / f"attempt{round_}{suffix}", keep_failed=True, write=False)
        result = attempt(trial)[-1]
        search.first_path = search.first_path or result.path
        drop = top1_drop(result, req.options.max_drop)
        search.tries.append(_tried(round_, len(search.excluded), result, None if drop is None else drop))
        search.crushed = search.crushed or _crushed(result)
        passed = result.verification.status == "pass" and drop is None
        if passed and len(search.excluded) <= search.budget:
            return options, None
        if passed:
            return None, _stop(
                result,
                f"passing needs {len(search.excluded)} layers in float, more than the budget of {search.budget}: "
                f"rerun with --max-float-layers {len(search.excluded)} (max_float_layers in a recipe) "
                f"to install it",
                search,
                req.options.equalize,
            )
        req.progress(
            f"--fallback greedy: round {round_ + 1}, {len(search.excluded)} layer(s) in float (budget {search.budget}): "
            f"{result.verification.reason or f'top-1 drop {drop:.2f} pts'}"
        )
        table = layer_table(result.path, req.loaded.module, held, result.verification.tolerance) if held is not None else []
        picked = _next(result, table, search.excluded, drop is not None and result.verification.status == "pass")
        if not picked:
            unnamed = (
                "no further layer can be named: the rest are within the rule layer by layer, so the "
                "loss is spread thinly, or sits in layers whose weights carry no parameter name"
            )
            return None, _stop(result, unnamed, search, req.options.equalize)
        modules = {layer.node: layer.module for layer in table}
        search.excluded += [node for node, _ in picked]
        search.reasons += [{"node": node, "module": modules.get(node), "why": why} for node, why in picked]
    over = f"; passing needs more than {len(search.excluded)} layers in float" if len(search.excluded) > search.budget else ""
    return None, _stop(result, f"still failing after {MAX_ROUNDS} rounds{over}", search, req.options.equalize)


def _stop(result, why: str, search: _Search, equalize: bool) -> list:
    """The failed try as the outcome: failing with what was tried, nothing installed."""
    result.verification.status = "fail"
    message = _stop_message(why, search.tries, search.budget, search.budget_from, search.crushed, equalize)
    result.verification.reason = "; ".join(part for part in (result.verification.reason, message) if part)
    result.details["float_fallback"] = {
        "layers": search.reasons,
        "kept_in_float": len(search.excluded),
        "weighted_layers": search.total,
        "budget": search.budget,
        "budget_from": search.budget_from,
        "tries": search.tries,
        "installed": False,
    }
    result.files, result.details["installed"] = [], False
    return [result]


def _install(req, attempt, options, search: _Search, held, spec) -> list:
    """The passing options quantized once more into the real output, with the layers kept in float and their speed cost."""
    from exporter.report import install_report

    final = attempt(replace(req, options=options, write=False))
    last = final[-1]
    cost = None
    if search.excluded and last.files and held is not None:
        assert search.first_path is not None  # the first round's attempt
        int8, mixed = _images_per_second(search.first_path, held[:8]), _images_per_second(last.path, held[:8])
        cost = {
            "all_int8_images_per_s": round(int8, 1),
            "with_fallback_images_per_s": round(mixed, 1),
            "speed_ratio": round(mixed / int8, 3),
        }
    total = search.total
    last.details["float_fallback"] = {
        "layers": search.reasons,
        "kept_in_float": len(search.excluded),
        "weighted_layers": total,
        "share": round(len(search.excluded) / total, 3) if total else 0.0,
        "budget": search.budget,
        "budget_from": search.budget_from,
        "tries": search.tries,
        "speed": cost,
    }
    install_report(last, req.loaded, spec, req.write)
    return final
