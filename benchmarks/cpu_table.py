"""benchmarks/RESULTS.md's CPU table, produced by `cnnexport run` and `cnnexport bench` themselves.

Run:  .venv/bin/python benchmarks/cpu_table.py [--models resnet18,mobilenet_v2,efficientnet_b0] [--batch 1,32]

For each model: random weights with BatchNorm statistics calibrated on photo crops, saved as a
checkpoint; `cnnexport run --recipe demo` builds TorchScript, ONNX, INT8 and FP16 (calibrated on
the crops); `cnnexport bench` times them all against PyTorch eager in one run with 2 threads.
Writes the table to benchmarks/RESULTS.md (between markers, so the GPU section is kept).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cnnexport")
BEGIN, END = "<!-- cpu-table:begin -->", "<!-- cpu-table:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,efficientnet_b0")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime
    import torch

    sys.path.insert(0, str(REPO))
    from benchmarks.quantize import photo_crops, photo_model

    work = Path(tempfile.mkdtemp(prefix="cnnexport-cpu-table-"))
    crops = photo_crops(320)
    np.save(work / "calib.npy", crops)
    sections = []
    for name in args.models.split(","):
        ckpt = work / f"{name}.pt"
        torch.save(photo_model(name, crops, samples=128, batch=16).state_dict(), ckpt)
        out = work / name
        run = subprocess.run(
            [
                str(CLI), "run", str(ckpt), "--recipe", "demo", "-o", str(out), "-q",
                "--set", f"calibration.data={work / 'calib.npy'}", "--set", "calibration.samples=256",
                "--set", "stages.simplify.enabled=false",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        manifest = json.loads((out / "manifest.json").read_text())
        statuses = {k: v["status"] for k, v in manifest["stages"].items()}
        bench = subprocess.run(
            [
                str(CLI), "bench", str(ckpt), str(out), "--batch", args.batch, "--threads", str(args.threads),
                "--seconds", str(args.seconds), "--json",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if bench.returncode != 0:
            raise SystemExit(bench.stderr[-2000:])
        rows = json.loads(bench.stdout)["rows"]
        lines = [
            f"### {name}",
            "",
            f"verification: {statuses}" + ("" if run.returncode == 0 else f" (run exit {run.returncode})"),
            "",
            "| target | batch | p50 ms | images/s | vs eager |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            if r["status"] == "ok":
                lines.append(
                    f"| {r['target']} | {r['batch']} | {r['p50_ms']:.1f} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x |"
                )
        sections.append("\n".join(lines))
    header = (
        f"CPU: {platform.processor() or platform.machine()}, {args.threads} threads; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; produced by `benchmarks/cpu_table.py` (cnnexport run + cnnexport bench)."
    )
    table = "\n\n".join([header, *sections])
    results = REPO / "benchmarks" / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n\n## CPU\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text:
        text += "\n## CPU\n\n" + BEGIN + "\n" + END + "\n"
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    results.write_text(before + BEGIN + "\n" + table + "\n" + END + after)
    print(table)


if __name__ == "__main__":
    main()
