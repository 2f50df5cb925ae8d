"""Recipe runs on resnet18: cold vs warm (cache), and --jobs 2 vs --jobs 1, in one session.

Run:  .venv/bin/python benchmarks/pipeline.py [--recipe release] [--samples 64]

Every run is the real `cnnexport run` in a fresh process. Cold runs start from an empty
output folder; the warm run repeats the first cold run's command on its folder. Prints wall
times and ratios; the target (warm <= 5% of cold) is reported, never enforced.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = Path(sys.executable).with_name("cnnexport")


def timed(cmd: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="release")
    parser.add_argument("--samples", type=int, default=64, help="calibration samples (kept small: the point is the pipeline)")
    args = parser.parse_args()

    import torch
    import torchvision

    work = Path(tempfile.mkdtemp(prefix="cnnexport-pipeline-"))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 224, 224) * 2 - 1)
    ckpt = work / "resnet18.pt"
    torch.save(model.eval().state_dict(), ckpt)
    base = [
        str(CLI), "run", str(ckpt), "--recipe", args.recipe, "--set", f"calibration.samples={args.samples}",
        "--set", "calibration.holdout=32",
    ]  # fmt: skip

    cold1, report = timed(base + ["-o", str(work / "serial"), "--jobs", "1"])
    warm, warm_report = timed(base + ["-o", str(work / "serial"), "--jobs", "1"])
    cold2, _ = timed(base + ["-o", str(work / "parallel"), "--jobs", "2"])
    stages = {name: stage["status"] for name, stage in report["manifest"]["stages"].items()}
    cached = all(t["cached"] for t in warm_report["timings"].values())
    same = (work / "serial" / "manifest.json").read_bytes() == (work / "parallel" / "manifest.json").read_bytes()

    print(f"recipe {args.recipe} on resnet18 ({args.samples} calibration samples); stages: {stages}")
    print(f"{'run':34} {'wall s':>8}")
    print(f"{'cold, --jobs 1':34} {cold1:8.1f}")
    print(f"{'warm (same command again)':34} {warm:8.1f}   every stage cached: {cached}")
    print(f"{'cold, --jobs 2':34} {cold2:8.1f}   manifest identical to --jobs 1: {same}")
    print(f"warm / cold: {warm / cold1:.3f} (target <= 0.05: {'met' if warm / cold1 <= 0.05 else 'NOT met'})")
    print(f"--jobs 2 / --jobs 1: {cold2 / cold1:.2f} (below 1 means the parallel run was faster)")


if __name__ == "__main__":
    main()
