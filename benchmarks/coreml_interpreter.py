"""How fast is cnnexport's MIL interpreter next to onnxruntime on the same model and inputs?

Run:  .venv/bin/python benchmarks/coreml_interpreter.py [--model resnet18] [--batch 4] [--repeats 7] [--json]

In one run: build the registry model with seeded weights (BatchNorm statistics calibrated by a
few train-mode passes), export it once as ONNX (fp32, onnxruntime CPU provider) and once as a
Core ML fp32 ML program (and an fp16 one), then time, on the same normalized batch,
`onnxruntime` InferenceSession.run and the interpreter's Program.run, alternating the two so
that a busy machine slows both alike (the interpreter also once with one BLAS thread: OpenBLAS's
threads degrade badly when the cores are oversubscribed). Reports medians and the interpreter / onnxruntime ratio
(target: <= 3x), plus the interpreter's max error relative to onnxruntime's output range.
The target is reported, never enforced: the exit status is 0 whatever the timings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGET = 3.0


def build(name: str, seed: int = 0):
    import torch

    from exporter import architectures

    entry = architectures.get(name)
    torch.manual_seed(seed)
    model = entry.build()
    spec = entry.spec()
    generator = torch.Generator().manual_seed(seed)
    from benchmarks.zoo import recalibrate_batchnorm

    recalibrate_batchnorm(model, [torch.rand((8, *spec.input_shape), generator=generator) * 2 - 1 for _ in range(3)])
    return model, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from exporter.inputs import random_inputs
    from exporter.targets.coreml import stage as coreml_stage
    from exporter.targets.coreml.mil import load_program
    from exporter.targets.onnx import stage as onnx_stage

    model, spec = build(args.model)
    loaded = SimpleNamespace(module=model, spec=spec)
    work = Path(tempfile.mkdtemp(prefix="cnnexport-bench-"))
    onnx_stage.export(loaded, work, "m.onnx", exporter="legacy")
    coreml_stage.export(loaded, work, "m32.mlpackage", precision="fp32")
    coreml_stage.export(loaded, work, "m16.mlpackage", precision="fp16")
    torch.set_num_threads(1)  # torch is done; keep its idle worker threads off the cores being timed

    x = random_inputs(spec, args.batch, seed=0).array
    session = ort.InferenceSession(str(work / "m.onnx"), providers=["CPUExecutionProvider"])
    programs = {"fp32": load_program(work / "m32.mlpackage"), "fp16": load_program(work / "m16.mlpackage")}
    from threadpoolctl import threadpool_limits

    def one_blas_thread():
        with threadpool_limits(limits=1, user_api="blas"):
            return next(iter(programs["fp32"].run({"input": x}).values()))

    runs = {
        "onnxruntime fp32": lambda: session.run(None, {"input": x})[0],
        "interpreter fp32": lambda: next(iter(programs["fp32"].run({"input": x}).values())),
        "interpreter fp16": lambda: next(iter(programs["fp16"].run({"input": x}).values())),
        "interpreter fp32, 1 BLAS thread": one_blas_thread,
    }
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ref = outputs["onnxruntime fp32"].astype(np.float64)
    span = float(ref.max() - ref.min()) or 1.0
    result = {
        "model": args.model,
        "batch": args.batch,
        "repeats": args.repeats,
        "median_seconds": {k: round(v, 4) for k, v in medians.items()},
        "ratio_fp32": round(medians["interpreter fp32"] / medians["onnxruntime fp32"], 2),
        "ratio_fp16": round(medians["interpreter fp16"] / medians["onnxruntime fp32"], 2),
        "ratio_fp32_one_blas_thread": round(medians["interpreter fp32, 1 BLAS thread"] / medians["onnxruntime fp32"], 2),
        "load_average_1min": round(__import__("os").getloadavg()[0], 2),
        "target": TARGET,
        "max_rel_err_fp32_vs_ort": float(np.abs(outputs["interpreter fp32"] - ref).max() / span),
        "max_rel_err_fp16_vs_ort": float(np.abs(outputs["interpreter fp16"].astype(np.float64) - ref).max() / span),
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model} at batch {args.batch}, median of {args.repeats} (alternating runs):")
    for name, value in medians.items():
        print(f"  {name:32s} {value * 1000:8.1f} ms")
    verdict = "within" if result["ratio_fp32"] <= TARGET else "OVER"
    print(f"interpreter fp32 / onnxruntime fp32 = {result['ratio_fp32']:.2f}x ({verdict} the {TARGET:g}x target)")
    print(f"interpreter fp16 / onnxruntime fp32 = {result['ratio_fp16']:.2f}x")
    print(
        f"interpreter fp32 with 1 BLAS thread / onnxruntime fp32 = {result['ratio_fp32_one_blas_thread']:.2f}x "
        f"(OpenBLAS threads suffer most on a busy machine; "
        f"1-min load average {result['load_average_1min']} on {__import__('os').cpu_count()} cores)"
    )
    print(
        f"interpreter vs onnxruntime max error / range: "
        f"fp32 {result['max_rel_err_fp32_vs_ort']:.2e}, fp16 {result['max_rel_err_fp16_vs_ort']:.2e}"
    )


if __name__ == "__main__":
    main()
