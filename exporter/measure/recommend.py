"""A recipe's bench step: time every verified CPU artifact the run made, on this machine, and name the fastest.

Only artifacts that passed verification compete (a faster wrong answer is not a candidate).
ONNX files are timed on onnxruntime and, when the recipe asks, on OpenVINO too; every ratio is
against onnxruntime on the fp32 ONNX, measured in the same run. Timings are not part of the
manifest (which stays byte-identical between identical runs): they go to bench.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

from exporter.options import Numbers, Strict, opt


class BenchSection(Strict):
    """The recipe's `bench` section."""

    enabled: bool = opt(False, "Time the verified CPU artifacts after the stages and recommend the fastest.")
    batch_sizes: Annotated[list[int], Numbers] = opt([1, 32], "Batch sizes timed.")
    seconds: float = opt(1.0, "Time budget per artifact and batch size.", gt=0)
    threads: Optional[int] = opt(None, "Threads for every runtime alike (default: torch's).", ge=1)
    runtimes: list[Literal["onnxruntime", "openvino"]] = opt(["onnxruntime", "openvino"], "Runtimes ONNX files are timed on.")


def bench_run(outcomes: list, out_dir: Path, section: BenchSection, progress=lambda _: None) -> dict | None:
    """Bench the passing CPU artifacts among ``outcomes``; {"settings", "rows", "recommended"} or None if none passed."""
    from exporter.kinds import KINDS
    from exporter.measure.bench import BenchSettings, Target, bench
    from exporter.runners import artifact_spec

    cpu = {row.kind: row for row in KINDS if row.bench == "cpu"}  # the rows that deploy to a CPU
    targets, fp32 = [], None
    for o in outcomes:
        entry = o.entry
        if o.status != "pass" or not entry or entry["kind"] not in cpu or not entry["files"]:
            continue
        path = out_dir / entry["files"][0]["path"]
        targets.append(Target(path.name, cpu[entry["kind"]].runner, path, sum(f["bytes"] for f in entry["files"])))
        if entry["kind"] == "onnx":
            fp32 = path.name
    spec = next((s for s in (artifact_spec(t.path) for t in targets) if s is not None), None)  # the spec they were made for
    if spec is None:
        return None
    progress(f"bench: {len(targets)} verified CPU artifact(s) at batch {', '.join(map(str, section.batch_sizes))}")
    settings = BenchSettings(
        batches=tuple(section.batch_sizes),
        threads=section.threads,
        seconds=section.seconds,
        baseline=fp32,
        runtimes=tuple(dict.fromkeys(["onnxruntime", *section.runtimes])),
    )
    result = bench(targets, spec, settings, progress=progress)
    result["recommended"] = recommend(result["rows"], section.batch_sizes)
    return result


def recommend(rows: list[dict], batches: list[int]) -> dict | None:
    """The target with the best geometric-mean throughput over the batch sizes (measured at every one of them)."""
    by_target: dict[str, dict[int, dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r["images_per_s"]:
            by_target.setdefault(r["target"], {})[r["batch"]] = r
    complete = {t: rs for t, rs in by_target.items() if all(b in rs for b in batches)}
    if not complete:
        return None

    def score(target: str) -> float:
        return math.exp(sum(math.log(complete[target][b]["images_per_s"]) for b in batches) / len(batches))

    best = max(complete, key=score)
    from exporter.kinds import runtime_of

    runtime = "openvino" if best.endswith("[openvino]") else runtime_of(complete[best][batches[0]]["kind"])
    return {
        "target": best,
        "runtime": runtime,
        "images_per_s": {str(b): round(complete[best][b]["images_per_s"], 1) for b in batches},
        "speedup_vs_onnxruntime_fp32": {
            str(b): None if complete[best][b]["speedup"] is None else round(complete[best][b]["speedup"], 2) for b in batches
        },
    }


def describe(recommended: dict | None) -> str:
    if not recommended:
        return "no verified CPU artifact could be timed"
    ratios = ", ".join(f"{x}x at batch {b}" for b, x in recommended["speedup_vs_onnxruntime_fp32"].items() if x is not None)
    return f"fastest verified CPU artifact on this machine: {recommended['target']} on {recommended['runtime']}" + (
        f" ({ratios} vs onnxruntime fp32)" if ratios else ""
    )
