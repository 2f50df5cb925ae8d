"""CPU runtimes side by side: torch eager, onnxruntime fp32/int8, OpenVINO fp32/bf16/int8, in one interleaved run.

Run:  .venv/bin/python benchmarks/cpu_runtimes.py [--models resnet18,mobilenet_v2,efficientnet_b0]
          [--batches 1,32] [--threads 2] [--seconds 3] [--rounds 3] [--json] [--markdown]

Each model: random weights with BatchNorm statistics from real photo crops (as the zoo builds
them), exported and verified by cnnexport itself (`build`): fp32 ONNX, INT8 QDQ ONNX (calibrated
on 256 crops), OpenVINO IRs fp32 / bf16 / int8 (NNCF, same calibration split). Only artifacts
that pass verification are timed. Each OpenVINO IR runs with the INFERENCE_PRECISION_HINT it was
verified with (fp32 and int8: f32; bf16: bf16). Throughput is the median of interleaved rounds
(noise hits every runtime alike); ratios are against onnxruntime fp32 at the same batch; top-1
agreement with PyTorch is measured on 64 held-out crops never used to calibrate. Targets are
printed, never enforced.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

TARGET = {"model": "resnet18", "ratio": 5.0}  # best verified CPU artifact vs onnxruntime fp32, at every batch


def _model(name: str, crops: np.ndarray, work: Path):
    import torch
    from quantize import photo_model

    torch.save(photo_model(name, crops).state_dict(), work / f"{name}.pt")
    return work / f"{name}.pt"


def _artifacts(name: str, ckpt: Path, work: Path, progress) -> tuple[object, dict]:
    from exporter import load_checkpoint
    from exporter.build import build

    loaded = load_checkpoint(ckpt, arch=name)
    calib = {"data": str(work / "calib.npy"), "samples": 256, "holdout": 64}
    made = {}
    onnx = build("onnx", ckpt, output=work / f"{name}.onnx", loaded=loaded, write=False)[-1]
    made["onnxruntime fp32"] = onnx
    made["onnxruntime int8"] = build("int8", onnx.path, calibration=calib, loaded=loaded, write=False)[-1]
    for precision in ("fp32", "bf16", "int8"):
        progress(f"{name}: OpenVINO {precision}")
        made[f"openvino {precision}"] = build(
            "openvino", onnx.path, {"precision": precision}, calibration=calib, loaded=loaded, write=False
        )[-1]
    return loaded, made


def _runner(label: str, result, threads: int):
    from exporter.targets.onnx.runner import OnnxRuntimeRunner
    from exporter.targets.openvino.runner import OpenVINORunner

    if label.startswith("openvino"):
        return OpenVINORunner(result.path, threads=threads)
    return OnnxRuntimeRunner(result.path, threads=threads)


def throughput(fn, batch: np.ndarray, seconds: float) -> float:
    fn(batch)  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        fn(batch)
        runs += 1
    return runs * len(batch) / (time.perf_counter() - started)


def measure(name: str, args, work: Path, crops: np.ndarray, progress) -> dict:
    import torch

    ckpt = _model(name, crops, work)
    loaded, made = _artifacts(name, ckpt, work, progress)
    held = crops[-64:]
    with torch.no_grad():
        reference = loaded.module(torch.from_numpy(held)).numpy()
    runners = {"torch eager fp32": None}
    status = {"torch eager fp32": "reference"}
    agreement = {"torch eager fp32": 1.0}
    for label, result in made.items():
        status[label] = result.verification.label
        if result.verification.status != "pass":
            continue  # a wrong artifact is not a candidate, however fast
        runner = _runner(label, result, args.threads)
        runners[label] = runner
        out = next(iter(runner.infer(held).values()))
        agreement[label] = float(np.mean(out.argmax(1) == reference.argmax(1)))

    def call(label):
        if label == "torch eager fp32":

            def eager(x):
                with torch.no_grad():
                    loaded.module(torch.from_numpy(x))

            return eager
        return runners[label].infer

    rows = {}
    for batch_size in args.batches:
        batch = np.ascontiguousarray(crops[:batch_size])
        samples = {label: [] for label in runners}
        for _ in range(args.rounds):  # interleaved: one round of every runtime, then the next round
            for label in runners:
                samples[label].append(throughput(call(label), batch, args.seconds))
        rows[batch_size] = {label: float(np.median(v)) for label, v in samples.items()}
        progress(f"{name} batch {batch_size}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in rows[batch_size].items()))
    return {
        "status": status,
        "top1_agreement_heldout": agreement,
        "images_per_second": rows,
        "ratios_vs_onnxruntime_fp32": {b: {k: v / r["onnxruntime fp32"] for k, v in r.items()} for b, r in rows.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,efficientnet_b0")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per runtime per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]

    import openvino
    import torch
    from quantize import photo_crops

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cnnexport-cpu-"))
    crops = photo_crops(256 + 64 + 64)
    np.save(work / "calib.npy", crops[:320])  # 256 calibrate + 64 held out by cnnexport's split; the last 64: agreement

    def progress(m):
        print(f"• {m}", file=sys.stderr, flush=True)

    report = {
        "threads": args.threads,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "batches": args.batches,
        "versions": {"torch": torch.__version__, "openvino": openvino.get_version()},
        "models": {},
    }
    for name in args.models.split(","):
        report["models"][name] = measure(name, args, work, crops, progress)
    target = report["models"].get(TARGET["model"])
    if target:
        best = {
            b: max((v for k, v in target["ratios_vs_onnxruntime_fp32"][b].items() if k != "torch eager fp32"), default=0)
            for b in args.batches
        }
        report["target"] = {**TARGET, "best_ratio": best, "met": all(v >= TARGET["ratio"] for v in best.values())}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    labels = ["torch eager fp32", "onnxruntime fp32", "onnxruntime int8", "openvino fp32", "openvino bf16", "openvino int8"]
    if args.markdown:
        print("| model | batch | " + " | ".join(labels) + " |")
        print("|---|---|" + "---|" * len(labels))
    for name, m in report["models"].items():
        for b in args.batches:
            ratios = m["ratios_vs_onnxruntime_fp32"][b]
            cells = [
                f"{ratios[label]:.2f}x ({m['images_per_second'][b][label]:.0f}/s)" if label in ratios else m["status"][label]
                for label in labels
            ]
            print(
                f"| {name} | {b} | " + " | ".join(cells) + " |"
                if args.markdown
                else f"{name:16} b{b:<3} " + "  ".join(f"{label}: {cell}" for label, cell in zip(labels, cells))
            )
        agreement = ", ".join(f"{k} {v:.3f}" for k, v in m["top1_agreement_heldout"].items())
        print(
            f"{'' if not args.markdown else '<!-- '}{name} held-out top-1 agreement with PyTorch: {agreement}"
            f"{'' if not args.markdown else ' -->'}"
        )
    if "target" in report:
        t = report["target"]
        print(
            f"best verified CPU artifact vs onnxruntime fp32 on {t['model']}: "
            + ", ".join(f"batch {b}: {v:.2f}x" for b, v in t["best_ratio"].items())
            + f" (target >= {t['ratio']}x: {'met' if t['met'] else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
