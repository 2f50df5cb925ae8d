"""Android targets beside the CPU ones: ExecuTorch and LiteRT (fp32, int8) vs ONNX / OpenVINO, in one run.

Run:  .venv/bin/python benchmarks/android.py [--models resnet18,mobilenet_v2] [--threads 2] [--seconds 2]
          [--samples 256] [--holdout 64] [--eval 128] [--eager] [--work DIR] [--no-write] [--report-only]

For each model (torchvision, random weights: nothing can be downloaded here), prepared exactly as
benchmarks/zoo.py prepares its models (its helpers, imported: ``torch.manual_seed(0)``, the
registry build, BatchNorm statistics recalibrated with ``recalibrate_batchnorm`` on the first 64
of ``calibration_array``'s photo crops of scikit-learn's two sample photos), input 3x224x224:

1. seven artifacts built by the real CLI (subprocesses of ``.venv/bin/cnnexport ... --json``), all
   calibrated on the same ``calib.npy`` (``--samples`` + ``--holdout`` crops, seed 0; the CLI
   calibrates on ``--samples`` of them and verifies int8 on the other ``--holdout``):
   ONNX fp32 (``onnx``), ONNX int8 (``quantize``, onnxruntime QDQ), OpenVINO int8 (``openvino
   --precision int8``, NNCF), ExecuTorch fp32 and int8 (``executorch``, XNNPACK), LiteRT fp32 and
   int8 (``litert``, XNNPACK delegate). A build that fails verification is kept (``--keep-failed``,
   NAME.rejected.EXT) and still measured, its verdict shown as it is;
2. one ``cnnexport bench ARTIFACTS... --batch 1,32 --threads N --baseline NAME.onnx --json`` per
   model, so every artifact of a model is timed in the same process and run (PyTorch eager too with
   --eager: minutes on this CPU): p50 latency at batch 1, throughput at batch 32, speed-up over ONNX
   fp32 on onnxruntime;
3. held-out top-1 agreement with PyTorch on ``--eval`` further crops (seed 1: other random crops of
   the same two photos, never given to a build), each artifact run through
   ``exporter.runners.open_runner(path).infer`` and compared with the PyTorch model's argmax
   (there are no labels: the weights are random, so accuracy would mean nothing);
4. each file's size and its ratio to its fp32 sibling (int8 ONNX and OpenVINO int8: the ONNX fp32;
   ExecuTorch int8: the fp32 .pte; LiteRT int8: the fp32 .tflite);
5. each build's verification verdict, from its JSON report.

Writes benchmarks/android.json and benchmarks/ANDROID.md (a table per model, the CPU model and
flags, the command and the date) unless --no-write; prints the tables; --report-only rewrites
ANDROID.md from android.json. About 17 minutes on 2 shared cores (1,027 s measured).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLI = REPO / ".venv" / "bin" / "cnnexport"
JSON_OUT = REPO / "benchmarks" / "android.json"
MARKDOWN = REPO / "benchmarks" / "ANDROID.md"
INPUT_SHAPE = (3, 224, 224)
# the CPU flags that decide which kernels run (VNNI int8, bf16, AMX)
FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def artifacts(name: str) -> list[dict]:
    """The seven builds: label, verb, arguments (after the source), output file, fp32 sibling, source."""
    return [
        {"label": "ONNX fp32 (onnxruntime)", "verb": "onnx", "file": f"{name}.onnx", "sibling": None, "source": "ckpt"},
        {
            "label": "ONNX int8 (onnxruntime)",
            "verb": "quantize",
            "args": ["--precision", "int8"],
            "calib": True,
            "file": f"{name}.int8.onnx",
            "sibling": f"{name}.onnx",
            "source": "onnx",
        },
        {
            "label": "OpenVINO int8",
            "verb": "openvino",
            "args": ["--precision", "int8"],
            "calib": True,
            "file": f"{name}.int8.xml",
            "sibling": f"{name}.onnx",
            "source": "onnx",
        },
        {"label": "ExecuTorch fp32", "verb": "executorch", "file": f"{name}.pte", "sibling": None, "source": "ckpt"},
        {
            "label": "ExecuTorch int8",
            "verb": "executorch",
            "args": ["--precision", "int8"],
            "calib": True,
            "file": f"{name}.int8.pte",
            "sibling": f"{name}.pte",
            "source": "ckpt",
        },
        {"label": "LiteRT fp32", "verb": "litert", "file": f"{name}.tflite", "sibling": None, "source": "ckpt"},
        {
            "label": "LiteRT int8",
            "verb": "litert",
            "args": ["--precision", "int8"],
            "calib": True,
            "file": f"{name}.int8.tflite",
            "sibling": f"{name}.tflite",
            "source": "ckpt",
        },
    ]


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), platform.processor())
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": [f for f in FLAGS if f in flags],
        "absent": [f for f in FLAGS if f not in flags],
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def prepare(name: str, work: Path, samples: int, holdout: int, n_eval: int):
    """zoo.py's model: seeded random init, BatchNorm from the first 64 calibration crops; calib.npy and eval.npy."""
    import numpy as np
    import torch

    from benchmarks.quantize import photo_crops
    from benchmarks.zoo import calibration_array, recalibrate_batchnorm
    from exporter import architectures

    entry = architectures.get(name)
    spec = entry.spec().with_overrides(input_shape=INPUT_SHAPE)
    torch.manual_seed(0)
    model = entry.build()
    calib = calibration_array(spec, n=samples + holdout)
    np.save(work / "calib.npy", calib)
    recalibrate_batchnorm(model, [torch.from_numpy(calib[start : start + 16]) for start in range(0, min(len(calib), 64), 16)])
    ckpt = work / f"{name}.pt"
    torch.save(model.eval().state_dict(), ckpt)
    held = photo_crops(n_eval, size=INPUT_SHAPE[1], seed=1)
    np.save(work / "eval.npy", held)
    return model.eval(), ckpt, held


def cnnexport(argv: list[str], cwd: Path) -> tuple[int, dict | None, str, float]:
    """Run the CLI; (exit code, its JSON report or None, the last stderr line, seconds)."""
    started = time.perf_counter()
    done = subprocess.run([str(CLI), *argv], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = None
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error")]
    return done.returncode, report, (errors or lines or [""])[-1][:400], seconds


def build_one(a: dict, name: str, ckpt: Path, work: Path, samples: int, holdout: int, progress) -> dict:
    source = ckpt if a["source"] == "ckpt" else work / f"{name}.onnx"
    argv = [a["verb"], str(source), *a.get("args", []), "--arch", name, "-o", str(work / a["file"]), "--keep-failed", "--json"]
    if a["source"] == "onnx":
        argv += ["--checkpoint", str(ckpt)]
    if a.get("calib"):
        argv += ["--calib", str(work / "calib.npy"), "--samples", str(samples), "--holdout", str(holdout)]
    progress(f"{name}: {a['label']}: cnnexport {' '.join(argv)}")
    code, report, last, seconds = cnnexport(argv, work)
    row = {"label": a["label"], "command": "cnnexport " + shlex.join(argv), "exit": code, "build_seconds": round(seconds, 1)}
    entry = (report or {}).get("artifacts", [{}])[-1] if report and report.get("artifacts") else None
    if entry is None:
        last = re.sub(r"/\S*/\.cnnexport-tmp-[^/]+/", "", last).replace(str(work) + "/", "")  # the staging folder
        row.update(verdict=f"error (exit {code}: {last})", path=None)
        return row
    v = entry.get("verification") or {}
    status = v.get("status", "?")
    row["verdict"] = status if status != "fail" else f"fail ({v.get('reason', '')})"
    row["precision"] = v.get("precision")
    row["verify"] = {k: v.get(k) for k in ("max_rel_err", "cosine", "top1_agreement", "batch_sizes")}
    row["details"] = {
        k: entry.get("details", {}).get(k)
        for k in (
            "calibration_samples",
            "samples_heldout",
            "quantizer",
            "delegated_subgraphs",
            "portable_ops",
            "batch",
            "converter",
            "layout",
        )
        if k in entry.get("details", {})
    }
    from exporter.pipeline import rejected_name

    final = Path(entry.get("path") or work / a["file"])
    rejected = final.with_name(rejected_name(final))
    kept = final if final.exists() else rejected if rejected.exists() else None
    row["path"] = str(kept) if kept else None
    files = [Path(f) for f in entry.get("files") or [final]]
    files = [f if f.exists() else f.with_name(rejected_name(f)) for f in files]
    row["bytes"] = sum(f.stat().st_size for f in files if f.exists()) or entry.get("bytes")
    return row


def bench(name: str, ckpt: Path, rows: list[dict], work: Path, threads: int, seconds: float, eager: bool, progress) -> dict:
    paths = [r["path"] for r in rows if r.get("path")]
    baseline = Path(next(r["path"] for r in rows if r["label"].startswith("ONNX fp32") and r.get("path"))).name
    reference = [str(ckpt), "--arch", name] if eager else []
    argv = [
        "bench",
        *paths,
        *reference,
        "--batch",
        "1,32",
        "--threads",
        str(threads),
        "--seconds",
        str(seconds),
        "--baseline",
        baseline,
        "--json",
    ]
    progress(f"{name}: cnnexport {' '.join(argv)}")
    code, report, last, took = cnnexport(argv, work)
    if report is None:
        raise SystemExit(f"bench failed (exit {code}): {last}")
    report["command"] = "cnnexport " + shlex.join(argv)
    report["seconds"] = round(took, 1)
    return report


def agreement(model, held, rows: list[dict], progress) -> None:
    """Top-1 agreement (and the smallest per-sample cosine) of each artifact with PyTorch on the held-out crops."""
    import numpy as np
    import torch

    from exporter.runners import open_runner

    with torch.no_grad():
        ref = model(torch.from_numpy(held)).numpy()
    for r in rows:
        if not r.get("path"):
            continue
        progress(f"agreement: {Path(r['path']).name}")
        try:
            with open_runner(Path(r["path"])) as runner:
                out = next(iter(runner.infer(held).values()))
        except Exception as exc:  # noqa: BLE001 - reported in the table, never hidden
            r["agreement"] = None
            r["agreement_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        a, b = out - out.mean(1, keepdims=True), ref - ref.mean(1, keepdims=True)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        r["agreement"] = float((out.argmax(1) == ref.argmax(1)).mean())
        r["min_cosine"] = float(cos.min())


def merge_bench(rows: list[dict], report: dict) -> None:
    by = {(Path(b["target"]).name, b["batch"]): b for b in report["rows"]}
    for r in rows:
        key = Path(r["path"]).name if r.get("path") else None
        for batch, field in ((1, "b1"), (32, "b32")):
            b = by.get((key, batch))
            r[field] = (
                None
                if b is None
                else {k: b.get(k) for k in ("status", "p50_ms", "images_per_s", "speedup", "runs", "peak_rss_mb")}
            )


def eager_rows(report: dict) -> dict:
    return {b["batch"]: b for b in report["rows"] if b["kind"] == "pytorch"}


def _fmt(x, spec: str, dash: str = "-") -> str:
    return dash if x is None else format(x, spec)


def _x(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def table(name: str, rows: list[dict], report: dict) -> list[str]:
    sizes = {Path(r["path"]).name.replace(".rejected", ""): r.get("bytes") for r in rows if r.get("path")}
    out = [
        "| artifact | file | verification | p50 ms, batch 1 | vs ONNX fp32, batch 1 | images/s, batch 32 "
        "| vs ONNX fp32, batch 32 | size MB | size vs fp32 | top-1 agreement (held-out) | min cosine |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    eager = eager_rows(report)
    if eager:
        b1, b32 = eager.get(1, {}), eager.get(32, {})
        out.append(
            f"| PyTorch eager (reference) | `{name}.pt` | - | {_fmt(b1.get('p50_ms'), '.1f')} "
            f"| {_x(b1.get('speedup'))} | {_fmt(b32.get('images_per_s'), '.1f')} | {_x(b32.get('speedup'))} "
            "| - | - | 1.000 | 1.0000 |"
        )
    for r in rows:
        b1, b32 = r.get("b1") or {}, r.get("b32") or {}
        sibling = r.get("sibling")
        ratio = "-" if not sibling or not sizes.get(sibling) or not r.get("bytes") else f"{r['bytes'] / sizes[sibling]:.2f}"
        lat = _fmt(b1.get("p50_ms"), ".1f") if b1.get("status", "ok") == "ok" else b1.get("status")
        thr = _fmt(b32.get("images_per_s"), ".1f") if b32.get("status", "ok") == "ok" else b32.get("status")
        agree = _fmt(r.get("agreement"), ".3f", r.get("agreement_error", "-"))
        verdict = r["verdict"].replace("|", "/")
        file = f"`{Path(r['path']).name}`" if r.get("path") else "-"
        out.append(
            f"| {r['label']} | {file} | {verdict} | {lat} | {_x(b1.get('speedup'))} | {thr} | {_x(b32.get('speedup'))} "
            f"| {_fmt(r.get('bytes') and r['bytes'] / 1e6, '.1f')} | {ratio} | {agree} | {_fmt(r.get('min_cosine'), '.4f')} |"
        )
    return out


def markdown(result: dict) -> str:
    c = result["cpu"]
    lines = [
        "# Android targets beside the CPU ones",
        "",
        f"Produced by `benchmarks/android.py` on {result['date']} (run took {result['seconds']:.0f} s):",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"**CPU:** {c['model']}, {c['cores']} cores; flags {', '.join(c['flags'])}; "
        f"no {', '.join(c['absent'])}. {result['threads']} threads for every runtime (`cnnexport bench --threads "
        f"{result['threads']}`); load average {result['loadavg_before']} before, {result['loadavg_after']} after.",
        "",
        f"**Versions:** {result['versions']}; cnnexport at {result.get('commit', 'an unrecorded commit')}.",
        "",
        "Each model: torchvision, random weights, BatchNorm statistics from photo crops (as `benchmarks/zoo.py`), "
        f"input {'x'.join(map(str, INPUT_SHAPE))}; every int8 artifact calibrated on the same {result['samples']} "
        f"crops and verified on {result['holdout']} more (`--samples {result['samples']} --holdout {result['holdout']}`). "
        "*verification* is each build's own verdict (its JSON report); *p50 ms* and *images/s* are one "
        "`cnnexport bench` run per model (all artifacts in the same process, one after another), with speed-ups over "
        "the ONNX fp32 model on onnxruntime at the same batch; *top-1 agreement* is with PyTorch's argmax on "
        f"{result['eval']} held-out crops no build saw (other random crops of the same two photos; the weights are "
        "random, so there is no accuracy to report), *min cosine* the smallest per-sample (centred) cosine there; "
        "*size vs fp32* is the file against its fp32 sibling (ONNX int8 and OpenVINO int8: the ONNX fp32).",
        "",
        '!!! warning "Caveat: a shared machine"',
        "    The machine is shared (2 cores; other work may have been running during the run: see the load average "
        "above). Absolute times are noisy; the ratios measured in the same bench run are the figures to read, and even "
        "they move by 10-20% between runs.",
        "",
    ]
    for m in result["models"]:
        lines += [f"## {m['model']}", "", *table(m["model"], m["artifacts"], m["bench"]), ""]
        base = next((r for r in m["artifacts"] if r["label"].startswith("ONNX fp32")), {})
        if (base.get("b1") or {}).get("p50_ms") and (base.get("b32") or {}).get("images_per_s"):
            per_image = 1000 / base["b32"]["images_per_s"]
            noisy = base["b1"]["p50_ms"] > 1.3 * per_image
            lines.append(
                f"* The baseline, ONNX fp32 on onnxruntime: {base['b1']['p50_ms']:.1f} ms per image at batch 1 (p50), "
                f"{per_image:.1f} ms per image at batch 32 (mean)"
                + (
                    ": batch 1 well above batch 32 points at contention while the baseline ran at batch 1, "
                    "which inflates every batch-1 ratio of this table."
                    if noisy
                    else "."
                )
            )
        for r in m["artifacts"]:
            notes = []
            if r.get("details", {}).get("portable_ops"):
                notes.append(f"ops left to portable kernels: {r['details']['portable_ops']}")
            if r.get("b32") and r["b32"].get("status") not in (None, "ok"):
                notes.append(f"batch 32: {r['b32']['status']}")
            if notes:
                lines.append(f"* {r['label']}: " + "; ".join(notes))
        lines += ["", f"Bench command (in the model's work folder): `{m['bench']['command'].replace(m['work'] + '/', '')}`", ""]
    lines += [
        "Notes:",
        "",
        "* LiteRT models are made at batch 1 (`docs/android.md`); at batch 32 the runner resizes the input where "
        "the graph allows, else runs the 32 samples one at a time: the batch-32 figure is what an app calling it 32 "
        "times gets.",
        "* ExecuTorch programs have a dynamic batch (default `--batch 1:8:32`, memory planned for 32).",
        "",
    ]
    return "\n".join(lines)


def commit() -> str:
    """HEAD, and the paths under exporter/ that differ from it (what the CLI really ran)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "exporter"], cwd=REPO, capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    changed = [line[3:] for line in dirty.splitlines()]
    return head + (f" with uncommitted changes to {', '.join(changed)}" if changed else " (exporter/ as committed)")


def versions() -> str:
    import importlib.metadata as md

    names = ("torch", "onnxruntime", "openvino", "executorch", "ai-edge-litert", "ai-edge-quantizer")
    found = []
    for n in names:
        try:
            found.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            found.append(f"{n} absent")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="bench's time budget per artifact and batch")
    parser.add_argument("--samples", type=int, default=256, help="calibration samples")
    parser.add_argument("--holdout", type=int, default=64, help="calibration crops the builds verify int8 on")
    parser.add_argument("--eval", type=int, default=128, help="held-out crops for top-1 agreement (no build sees them)")
    parser.add_argument("--eager", action="store_true", help="also time PyTorch eager (slow on this CPU: minutes)")
    parser.add_argument("--work", type=Path, help="where the artifacts go (default: a new temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave android.json and ANDROID.md alone")
    parser.add_argument("--report-only", action="store_true", help="rewrite ANDROID.md from android.json (nothing is run)")
    args = parser.parse_args()
    if args.report_only:
        MARKDOWN.write_text(markdown(json.loads(JSON_OUT.read_text())))
        print(MARKDOWN.read_text())
        return

    started = time.perf_counter()
    work_root = args.work or Path(tempfile.mkdtemp(prefix="cnnexport-android-"))
    work_root.mkdir(parents=True, exist_ok=True)

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    command = ".venv/bin/python benchmarks/android.py " + shlex.join(sys.argv[1:])
    result = {
        "command": command.strip(),
        "date": dt.date.today().isoformat(),
        "cpu": cpu(),
        "threads": args.threads,
        "loadavg_before": loadavg(),
        "versions": versions(),
        "commit": commit(),
        "samples": args.samples,
        "holdout": args.holdout,
        "eval": args.eval,
        "work": str(work_root),
        "models": [],
    }
    progress(f"work folder {work_root}; CPU {result['cpu']['model']} ({', '.join(result['cpu']['flags'])})")
    for name in args.models.split(","):
        work = work_root / name
        work.mkdir(parents=True, exist_ok=True)
        progress(f"{name}: preparing (random init, BatchNorm from photo crops)")
        model, ckpt, held = prepare(name, work, args.samples, args.holdout, args.eval)
        rows = []
        for a in artifacts(name):
            row = build_one(a, name, ckpt, work, args.samples, args.holdout, progress)
            row["sibling"] = a["sibling"]
            progress(f"{name}: {a['label']}: {row['verdict']} ({row['build_seconds']} s)")
            rows.append(row)
        report = bench(name, ckpt, rows, work, args.threads, args.seconds, args.eager, progress)
        merge_bench(rows, report)
        agreement(model, held, rows, progress)
        result["models"].append(
            {"model": name, "work": str(work), "input_shape": list(INPUT_SHAPE), "artifacts": rows, "bench": report}
        )
    result["loadavg_after"] = loadavg()
    result["seconds"] = round(time.perf_counter() - started, 1)

    text = markdown(result)
    print(text)
    if not args.no_write:
        JSON_OUT.write_text(json.dumps(result, indent=2) + "\n")
        MARKDOWN.write_text(text)
        progress(f"wrote {JSON_OUT.relative_to(REPO)} and {MARKDOWN.relative_to(REPO)}")


if __name__ == "__main__":
    main()
