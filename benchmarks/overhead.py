"""How much wall time does the `cnnexport` CLI add on top of the library calls it wraps?

Run:  .venv/bin/python benchmarks/overhead.py [--repeats 3] [--help-repeats 5] [--json]

Measured in one run, every command in a fresh subprocess (so interpreter start-up and
imports are paid on both sides):

1. `cnnexport onnx resnet18.pt -o r.onnx` (architecture inferred from the keys, with a warm
   and with an empty registry-signature cache), and the same with `--arch resnet18`, vs. a
   bare script doing only what an export needs:
   torch.load + build resnet18 + load_state_dict + torch.onnx.export(dynamo=True, dynamic
   batch, batch-2 example) + one onnxruntime InferenceSession run on a batch.
   Repeated --repeats times in alternating order; medians and ratios are reported.
2. `cnnexport --help` vs. `python -c "import torch"` (median of --help-repeats each).

The CLI's signature cache is pointed at temporary folders ($CNNEXPORT_CACHE), so the user's
own cache is never read or written. The 1.3x target is reported, never enforced: the exit status is 0 whatever the timings
(non-zero only if a command itself fails).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cnnexport")
TARGET = 1.3
VERIFY_BATCH = 4
IMPORT_TORCH_LABEL = 'python -c "import torch"'

# The bare library calls the CLI wraps, with nothing else (no checks, no verification report).
BARE_SCRIPT = textwrap.dedent(
    """
    import sys

    import onnxruntime as ort
    import torch
    import torchvision

    checkpoint, output, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    state_dict = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = torchvision.models.resnet18(weights=None, num_classes=1000)
    model.load_state_dict(state_dict)
    model.eval()
    example = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            output,
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
        )
    session = ort.InferenceSession(output, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": torch.rand(batch, 3, 224, 224).numpy()})[0]
    assert logits.shape == (batch, 1000), logits.shape
    """
)

# Build the checkpoint: random resnet18 whose BatchNorm running stats come from a few
# train-mode forward passes, so the exported model produces realistic, non-degenerate logits.
MAKE_CHECKPOINT = textwrap.dedent(
    """
    import sys

    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=1000)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(8, 3, 224, 224))
    torch.save(model.state_dict(), sys.argv[1])
    """
)


def log(message: str) -> None:
    print(f"[overhead] {message}", file=sys.stderr, flush=True)


def run_timed(cmd: list[str], cwd: Path, env: dict) -> float:
    """Wall seconds of one subprocess; raises with its output if it fails."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return seconds


def summary(runs: list[float]) -> dict:
    return {
        "median_s": statistics.median(runs),
        "min_s": min(runs),
        "max_s": max(runs),
        "runs_s": [round(r, 3) for r in runs],
    }


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    # Same conditions for both sides; the CLI's rich console output must not depend on a tty.
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    return env


def versions() -> dict:
    code = (
        "import json, torch, torchvision, onnxruntime, onnx, onnxscript;"
        "print(json.dumps({'torch': torch.__version__, 'torchvision': torchvision.__version__,"
        " 'onnxruntime': onnxruntime.__version__, 'onnx': onnx.__version__, 'onnxscript': onnxscript.__version__,"
        " 'torch_threads': torch.get_num_threads()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **json.loads(out.strip().splitlines()[-1]),
    }


VARIANTS = {
    "bare": "bare: load + build + onnx.export + 1 ORT run",
    "cli_arch": "cnnexport onnx --arch resnet18",
    "cli": "cnnexport onnx (inferred, warm cache)",
    "cli_cold": "cnnexport onnx (inferred, empty cache)",
}


def bench_export(work: Path, checkpoint: Path, repeats: int, env: dict, warm_cache: Path) -> dict:
    bare_script = work / "bare_export.py"
    bare_script.write_text(BARE_SCRIPT)
    cli = [str(CLI), "onnx", str(checkpoint)]
    commands = {
        "bare": lambda out: [sys.executable, str(bare_script), str(checkpoint), str(out), str(VERIFY_BATCH)],
        "cli_arch": lambda out: cli + ["-o", str(out), "--arch", "resnet18"],
        "cli": lambda out: cli + ["-o", str(out)],
        "cli_cold": lambda out: cli + ["-o", str(out)],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for i in range(repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            out_dir = work / f"out-{name}-{i}"
            out_dir.mkdir()
            # cli_cold: a fresh, empty cache folder each run (the first run on a machine).
            cache = work / f"cache-cold-{i}" if name == "cli_cold" else warm_cache
            run_env = {**env, "CNNEXPORT_CACHE": str(cache)}
            seconds = run_timed(commands[name](out_dir / "r.onnx"), cwd=work, env=run_env)
            if not (out_dir / "r.onnx").is_file():
                raise RuntimeError(f"{name} wrote no r.onnx")
            for f in out_dir.iterdir():  # keep the temp dir small
                f.unlink()
            runs[name].append(seconds)
            log(f"export run {i + 1}/{repeats} {name:8s} {seconds:7.2f} s")
    result = {name: summary(r) for name, r in runs.items()}
    bare = result["bare"]["median_s"]
    for name in ("cli_arch", "cli", "cli_cold"):
        ratio = result[name]["median_s"] / bare
        result[f"ratio_{name}"] = ratio
        # Ratio of the fastest runs: less sensitive to other load on a shared machine.
        result[f"min_ratio_{name}"] = result[name]["min_s"] / result["bare"]["min_s"]
        result[f"target_met_{name}"] = ratio <= TARGET
    result["repeats"] = repeats
    result["target_ratio"] = TARGET
    return result


def bench_help(work: Path, repeats: int, env: dict) -> dict:
    commands = {
        "cli_help": [str(CLI), "--help"],
        "import_torch": [sys.executable, "-c", "import torch"],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            runs[name].append(run_timed(commands[name], cwd=work, env=env))
    result = {name: summary(r) for name, r in runs.items()}
    result["ratio"] = result["cli_help"]["median_s"] / result["import_torch"]["median_s"]
    result["repeats"] = repeats
    return result


def table(report: dict) -> str:
    e, h = report["export"], report["help"]
    lines = [
        f"cnnexport overhead (python {report['env']['python']}, torch {report['env']['torch']}, "
        f"onnxruntime {report['env']['onnxruntime']}, {report['env']['cpus']} CPUs)",
        "",
        f"1. ONNX export of resnet18 (median of {e['repeats']}, wall seconds, fresh process each)",
        f"   {'command':<44} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7} {'ratio of mins':>14}",
    ]
    for key, label in VARIANTS.items():
        s = e[key]
        ratio = 1.0 if key == "bare" else e["ratio_" + key]
        min_ratio = 1.0 if key == "bare" else e["min_ratio_" + key]
        lines.append(f"   {label:<44} {s['median_s']:8.2f} {s['min_s']:8.2f} {s['max_s']:8.2f} {ratio:7.2f} {min_ratio:14.2f}")
    for key in ("cli_arch", "cli", "cli_cold"):
        met = "met" if e["target_met_" + key] else "NOT met"
        lines.append(f"   target <= {e['target_ratio']:.1f}x, {VARIANTS[key]}: {e['ratio_' + key]:.3f}x (medians) -> {met}")
    for key, label in (("cli", "warm cache"), ("cli_cold", "empty cache")):
        inference = e[key]["median_s"] - e["cli_arch"]["median_s"]
        lines.append(f"   architecture inference, {label}: {inference:+.2f} s (inferred - --arch, medians)")
    if not e["signature_cache_written"]:
        lines.append("   (this cnnexport wrote no signature cache: warm and empty-cache runs do the same work)")
    lines += [
        "",
        f"2. start-up (median of {h['repeats']}, wall seconds)",
        f"   {IMPORT_TORCH_LABEL:<44} {h['import_torch']['median_s']:8.2f}",
        f"   {'cnnexport --help':<44} {h['cli_help']['median_s']:8.2f}",
        f"   ratio cnnexport --help / import torch: {h['ratio']:.2f}x",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="export runs per variant (default 3)")
    parser.add_argument("--help-repeats", type=int, default=5, help="runs of --help / import torch (default 5)")
    parser.add_argument("--json", action="store_true", help="print a JSON object on stdout (the table goes to stderr)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.help_repeats < 1:
        parser.error("repeats must be >= 1")
    if not CLI.is_file():
        parser.error(f"console script {CLI} not found; install the project into this interpreter's environment")

    with tempfile.TemporaryDirectory(prefix="cnnexport-overhead-") as tmp:
        work = Path(tmp)
        env = {**child_env(), "CNNEXPORT_CACHE": str(work / "cache-warm")}
        checkpoint = work / "resnet18.pt"
        log("building the resnet18 checkpoint (BatchNorm stats calibrated)")
        subprocess.run([sys.executable, "-c", MAKE_CHECKPOINT, str(checkpoint)], check=True, env=env)
        log("warm-up: page cache (imports, --help) and the CLI's signature cache (cnnexport inspect)")
        run_timed([sys.executable, "-c", "import torch, torchvision, onnxruntime, onnxscript, onnx"], cwd=work, env=env)
        run_timed([str(CLI), "--help"], cwd=work, env=env)
        warm_cache = work / "cache-warm"
        run_timed([str(CLI), "inspect", str(checkpoint)], cwd=work, env={**env, "CNNEXPORT_CACHE": str(warm_cache)})
        cache_written = warm_cache.is_dir() and any(warm_cache.iterdir())
        report = {"env": versions(), "repo": REPO.name}
        report["export"] = bench_export(work, checkpoint, args.repeats, env, warm_cache)
        report["export"]["signature_cache_written"] = cache_written
        log("timing start-up: cnnexport --help vs python -c 'import torch'")
        report["help"] = bench_help(work, args.help_repeats, env)

    text = table(report)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(report, indent=2))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
