"""Accuracy-aware INT8 (`quantize --fallback auto`): the fewest layers kept in float that pass.

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
from dataclasses import replace
from pathlib import Path

DEFAULT_FLOAT_LAYERS = 2
DEFAULT_FLOAT_SHARE = 0.25
MAX_ROUNDS = 12


def _drop(result, max_drop: float | None) -> float | None:
    """Top-1 points lost on --eval data when that is more than --max-drop allows, else None."""
    evaluation = result.details.get("eval")
    if max_drop is None or not evaluation:
        return None
    drop = evaluation["results"][result.path.name]["top1_drop_points"]
    return drop if drop > max_drop else None


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
    """What --fallback auto tried, the best it reached, and what to change."""
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
        f"--fallback auto stopped: {why} (tried {len(tries)} round(s) with {rounds} layer(s) in float{reached}; "
        f"budget {budget} from {budget_from}){hint}"
    )


def quantize_with_fallback(req, attempt) -> list:
    """``attempt(request) -> [ArtifactResult]`` quantizes once; returns the final, installed model (or the last failure)."""
    from exporter.errors import BadInputError
    from exporter.pipeline import onnx_source
    from exporter.report import install_report
    from exporter.rescue.debug import layer_table, onnx_layers

    if req.loaded is None:
        raise BadInputError(
            "--fallback auto measures every layer against PyTorch: pass --checkpoint CKPT (or quantize the checkpoint)"
        )
    _, _, spec, output = onnx_source(req.source, req.output, req.loaded, req.kind.suffix_of(req.options), req.kind.kind)
    total = len(onnx_layers(req.source)[1])
    budget, budget_from = float_budget(total, req.options.max_float_layers, req.options.max_float_share)
    held = _held_out(req, spec)
    work = Path(tempfile.mkdtemp(prefix=".cnnexport-fallback-", dir=output.parent))
    excluded: list[str] = []
    reasons: list[dict] = []
    tries: list[dict] = []
    first_path = crushed = None

    def stop(result, why: str) -> list:
        result.verification.status = "fail"
        message = _stop_message(why, tries, budget, budget_from, crushed, req.options.equalize)
        result.verification.reason = "; ".join(part for part in (result.verification.reason, message) if part)
        result.details["float_fallback"] = {
            "layers": reasons,
            "kept_in_float": len(excluded),
            "weighted_layers": total,
            "budget": budget,
            "budget_from": budget_from,
            "tries": tries,
            "installed": False,
        }
        result.files, result.details["installed"] = [], False
        return [result]

    try:
        for round_ in range(MAX_ROUNDS):
            options = req.options.model_copy(
                update={
                    "exclude": [*req.options.exclude, *excluded],
                    "fallback": "none",
                    "max_drop": None,
                    "max_float_layers": None,
                    "max_float_share": None,
                }
            )
            trial = replace(req, options=options, output=work / f"attempt{round_}{output.suffix}", keep_failed=True, write=False)
            result = attempt(trial)[-1]
            first_path = first_path or result.path
            drop = _drop(result, req.options.max_drop)
            tries.append(_tried(round_, len(excluded), result, None if drop is None else drop))
            crushed = crushed or _crushed(result)
            passed = result.verification.status == "pass" and drop is None
            if passed and len(excluded) <= budget:
                break
            if passed:
                return stop(
                    result,
                    f"passing needs {len(excluded)} layers in float, more than the budget of {budget}: "
                    f"rerun with --max-float-layers {len(excluded)} (max_float_layers in a recipe) "
                    f"to install it",
                )
            req.progress(
                f"--fallback auto: round {round_ + 1}, {len(excluded)} layer(s) in float (budget {budget}): "
                f"{result.verification.reason or f'top-1 drop {drop:.2f} pts'}"
            )
            table = layer_table(result.path, req.loaded.module, held, result.verification.tolerance) if held is not None else []
            picked = _next(result, table, excluded, drop is not None and result.verification.status == "pass")
            if not picked:
                return stop(
                    result,
                    "no further layer can be named: the rest are within the rule layer by layer, so the "
                    "loss is spread thinly, or sits in layers whose weights carry no parameter name",
                )
            modules = {layer.node: layer.module for layer in table}
            excluded += [node for node, _ in picked]
            reasons += [{"node": node, "module": modules.get(node), "why": why} for node, why in picked]
        else:
            over = f"; passing needs more than {len(excluded)} layers in float" if len(excluded) > budget else ""
            return stop(result, f"still failing after {MAX_ROUNDS} rounds{over}")
        final = attempt(replace(req, options=options, write=False))
        last = final[-1]
        cost = None
        if excluded and last.files and held is not None:
            int8, mixed = _images_per_second(first_path, held[:8]), _images_per_second(last.path, held[:8])
            cost = {
                "all_int8_images_per_s": round(int8, 1),
                "with_fallback_images_per_s": round(mixed, 1),
                "speed_ratio": round(mixed / int8, 3),
            }
        last.details["float_fallback"] = {
            "layers": reasons,
            "kept_in_float": len(excluded),
            "weighted_layers": total,
            "share": round(len(excluded) / total, 3) if total else 0.0,
            "budget": budget,
            "budget_from": budget_from,
            "tries": tries,
            "speed": cost,
        }
        install_report(last, req.loaded, spec, req.write)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
