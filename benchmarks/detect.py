"""Detection: every artifact kind of YOLOv8n, YOLO11n and YOLO26n judged by its boxes and its mAP50 vs PyTorch, in one run.

Run:  .venv/bin/python benchmarks/detect.py [--models yolov8n,yolo11n,yolo26n] [--epochs N] [--samples 64]
          [--holdout 32] [--work DIR] [--no-write] [--report-only]

One data set for every model: ``exporter.tasks.detect_shapes.write_dataset`` (circles, squares and
triangles drawn on noise, 96 training and 32 validation images at 128 px, seed 0; nothing can be
downloaded here). For each model:

1. training from scratch on the CPU with ``exporter.tasks.detect_shapes.train_yolo`` (Ultralytics,
   imported only: SGD lr 0.05, no mosaic, 128 px): YOLOv8n and YOLO11n 15 epochs, YOLO26n 30 (its
   NMS-free one-to-one head scores low after short training, so every verb judges it with
   ``--conf 0.1``; the others keep the default 0.25). ``--epochs N`` sets all three (a quick check);
2. seven artifacts built by the real CLI (subprocesses of ``.venv/bin/cnnexport ... --images
   shapes/images/val --keep-failed --json``), each command timed (wall seconds: build and
   verification) and its JSON report read: ONNX fp32 (``onnx``); ONNX INT8 for the CPU (``quantize
   --calib shapes/images/train --samples 64 --holdout 32``); the TensorRT INT8 Q/DQ ONNX (``tensorrt
   --precision int8 --emit-script KIT --calib ... --samples 64``: verified by onnxruntime; the engine
   itself is skipped here, TensorRT is not installed, and is reported as such, never as a pass);
   OpenVINO INT8 (``openvino --precision int8 --calib ... --samples 64 --holdout 32``, NNCF); Core ML
   fp16 (``coreml``, verified by cnnexport's Linux MIL interpreter); ExecuTorch fp32 (``executorch
   --static-batch 1``: its lowering fixes a YOLO's batch; batch 1 as Ultralytics' own ExecuTorch
   export); LiteRT fp32 (``litert``). A build that fails verification is kept (NAME.rejected.EXT)
   and still measured, its verdict shown as it is;
3. from each build's verification checks (``artifacts[].verification.checks``): the matched-box F1
   and mean IoU of matched boxes against PyTorch on the validation images (``--images``) and, for the
   calibrated builds, on the held-out calibration images (never calibrated on);
4. one ``cnnexport eval best.pt ARTIFACTS... --data shapes/data.yaml --json`` per model: mAP50 and
   mAP50-95 of every artifact that runs here beside PyTorch's, on the 32 labelled validation images
   (faster-coco-eval, Ultralytics' val decoding: conf 0.001, NMS IoU 0.7);
5. Ultralytics' own ``YOLO(best).val(..., imgsz=128, rect=False)`` mAP50 / mAP50-95 for the PyTorch
   model, beside cnnexport's PyTorch figure (YOLO26n: Ultralytics' val uses the one-to-many head);
6. each file's size, and the seconds of every stage (data, training, each build, eval, val).

Writes benchmarks/detect.json and benchmarks/DETECT.md (a table per model and a summary across
models, the CPU model and flags, the command and the date) unless --no-write; prints the tables;
--report-only rewrites DETECT.md from detect.json. About 10 minutes on 2 shared cores (597 s measured).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.android import cnnexport, commit, cpu, loadavg  # noqa: E402 - after the path setup

JSON_OUT = REPO / "benchmarks" / "detect.json"
MARKDOWN = REPO / "benchmarks" / "DETECT.md"
SIZE = 128
TRAIN, VAL = 96, 32
DATA = "shapes"  # the data set's folder in the work folder
# name: Ultralytics model yaml, training epochs, the --conf every verb judges it with (None: the default 0.25)
MODELS = {
    "yolov8n": {"yaml": "yolov8n.yaml", "epochs": 15, "conf": None},
    "yolo11n": {"yaml": "yolo11n.yaml", "epochs": 15, "conf": None},
    "yolo26n": {"yaml": "yolo26n.yaml", "epochs": 30, "conf": 0.1},
}
# the labels of the artifact kinds a JSON report names, in the tables' order
KINDS = {
    "onnx": "ONNX fp32 (onnxruntime)",
    "int8-cpu": "ONNX INT8 (onnxruntime)",
    "int8-tensorrt": "TensorRT INT8 Q/DQ ONNX (onnxruntime)",
    "tensorrt": "TensorRT engine",
    "openvino": "OpenVINO INT8",
    "coreml": "Core ML fp16 (MIL interpreter)",
    "executorch": "ExecuTorch fp32, batch 1",
    "litert": "LiteRT fp32",
}


def builds(name: str, ckpt: str, samples: int, holdout: int) -> list[dict]:
    """The seven commands of a model (paths relative to the work folder): label, verb, source, arguments."""
    onnx = f"{name}/{name}.onnx"
    calib = ["--calib", f"{DATA}/images/train", "--samples", str(samples)]
    return [
        {"verb": "onnx", "source": ckpt, "args": ["-o", onnx]},
        {
            "verb": "quantize",
            "source": onnx,
            "args": ["--checkpoint", ckpt, *calib, "--holdout", str(holdout), "-o", f"{name}/{name}.int8.onnx"],
        },
        {
            "verb": "tensorrt",
            "source": onnx,
            "args": ["--checkpoint", ckpt, "--precision", "int8", "--emit-script", f"{name}/trt-kit", *calib],
        },
        {
            "verb": "openvino",
            "source": onnx,
            "args": ["--checkpoint", ckpt, "--precision", "int8", *calib, "--holdout", str(holdout)]
            + ["-o", f"{name}/{name}.int8.xml"],
        },
        {"verb": "coreml", "source": ckpt, "args": ["-o", f"{name}/{name}.mlpackage"]},
        {"verb": "executorch", "source": ckpt, "args": ["--static-batch", "1", "-o", f"{name}/{name}.pte"]},
        {"verb": "litert", "source": ckpt, "args": ["-o", f"{name}/{name}.tflite"]},
    ]


def size_of(paths: list[Path]) -> int | None:
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_size
    return total or None


def box_agreement(checks: list[dict]) -> dict:
    """F1, mean IoU and reference boxes of the checks against PyTorch on the images and on the held-out inputs (worst)."""
    out = {}
    for key, prefix in (("images", "images"), ("heldout", "held-out")):
        found = [c for c in checks if c.get("reference") != "metadata" and str(c.get("inputs", "")).startswith(prefix)]
        if not found:
            continue
        f1s = [c["f1"] for c in found if c.get("f1") is not None]
        ious = [c["box_iou"] for c in found if c.get("box_iou") is not None]
        out[key] = {
            "inputs": found[0]["inputs"],
            "f1": min(f1s) if f1s else None,
            "box_iou": min(ious) if ious else None,
            "reference_boxes": min((c["reference_boxes"] for c in found if c.get("reference_boxes") is not None), default=None),
            "status": "fail" if any(c.get("status") == "fail" for c in found) else found[0].get("status"),
        }
    return out


def build_one(b: dict, conf: float | None, work: Path, progress) -> list[dict]:
    """Run one build command; one row per artifact its report names (the TensorRT verb: the Q/DQ ONNX and the engine)."""
    from exporter.pipeline import rejected_name

    argv = [b["verb"], b["source"], *b["args"], "--images", f"{DATA}/images/val", "--keep-failed", "--json"]
    if conf is not None:
        argv += ["--conf", str(conf)]
    progress(f"cnnexport {shlex.join(argv)}")
    code, report, last, seconds = cnnexport(argv, work)
    command = "cnnexport " + shlex.join(argv)
    entries = (report or {}).get("artifacts") or []
    if not entries:
        last = last.replace(str(work) + "/", "")
        return [{"label": b["verb"], "verb": b["verb"], "command": command, "exit": code, "seconds": round(seconds, 1),
                 "verdict": f"error (exit {code}: {last})", "path": None}]  # fmt: skip
    rows = []
    for i, entry in enumerate(entries):
        v = entry.get("verification") or {}
        status = v.get("status", "?")
        verdict = status if status == "pass" else f"{status} ({v.get('reason', '')})"
        final = work / (entry.get("path") or "")
        rejected = final.with_name(rejected_name(final))
        kept = final if final.exists() else rejected if rejected.exists() else None
        files = [work / f for f in entry.get("files") or [entry.get("path") or ""]]
        files = [f if f.exists() else f.with_name(rejected_name(f)) for f in files]
        details = entry.get("details") or {}
        rows.append(
            {
                "label": KINDS.get(entry.get("kind"), entry.get("kind")),
                "kind": entry.get("kind"),
                "verb": b["verb"],
                "command": command,
                "exit": code,
                "seconds": round(seconds, 1) if i == 0 else None,  # one command, its time on its first artifact
                "artifact_seconds": entry.get("seconds"),
                "verdict": verdict,
                "precision": v.get("precision"),
                "path": str(kept.relative_to(work)) if kept else None,
                "bytes": None if entry.get("kind") == "tensorrt" else size_of(files) or entry.get("bytes"),
                "boxes": box_agreement(v.get("checks") or []),
                "box_err": v.get("box_err"),
                "score_err": v.get("score_err"),
                "details": {
                    k: details[k]
                    for k in (
                        "calibration_samples",
                        "samples_heldout",
                        "float_detect_head_nodes",
                        "quantizer",
                        "delegated_subgraphs",
                        "portable_ops",
                        "batch",
                        "converter",
                        "kit",
                        "kit_files",
                        "installed",
                    )
                    if k in details
                },
            }
        )
    return rows


def evaluate(ckpt: str, rows: list[dict], work: Path, progress) -> dict:
    """One `cnnexport eval` of PyTorch and every artifact that exists; where it fails, each artifact alone."""
    paths = [r["path"] for r in rows if r.get("path") and r.get("kind") != "tensorrt"]
    argv = ["eval", ckpt, *paths, "--data", f"{DATA}/data.yaml", "--json"]
    progress(f"cnnexport {shlex.join(argv)}")
    code, report, last, seconds = cnnexport(argv, work)
    out = {"command": "cnnexport " + shlex.join(argv), "seconds": round(seconds, 1), "exit": code}
    if report and report.get("results"):
        out["report"] = report
        return out
    out["error"] = last.replace(str(work) + "/", "")
    progress(f"eval failed (exit {code}: {out['error']}); each artifact alone")
    results, errors = {}, {}
    for p in paths:
        code, single, last, _ = cnnexport(["eval", ckpt, p, "--data", f"{DATA}/data.yaml", "--json"], work)
        if single and single.get("results"):
            results.update(single["results"])
            out.setdefault("report", single)
        else:
            errors[p] = f"exit {code}: {last.replace(str(work) + '/', '')}"
    if "report" in out:
        out["report"] = {**out["report"], "results": results}
    out["errors"] = errors
    return out


def ultralytics_val(ckpt: Path, data: Path, work: Path) -> dict:
    """Ultralytics' own val of the PyTorch model (square 128 px input, as exported)."""
    import contextlib
    import io
    import logging

    from ultralytics import YOLO

    from exporter.sources.ultralytics import restore_pil_open

    captured = io.StringIO()
    logger = logging.getLogger("ultralytics")  # its tables: into val.log, not the terminal
    saved = logger.handlers[:]
    logger.handlers = [logging.StreamHandler(captured)]
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            metrics = YOLO(str(ckpt)).val(
                data=str(data), imgsz=SIZE, batch=16, device="cpu", plots=False, verbose=False, rect=False,
                project=str(work / "ultralytics-val"), name=ckpt.parents[2].name, exist_ok=True,
            )  # fmt: skip
    finally:
        logger.handlers = saved
        restore_pil_open()  # Ultralytics patches PIL on import
        (work / "ultralytics-val").mkdir(exist_ok=True)
        (work / "ultralytics-val" / f"{ckpt.parents[2].name}.log").write_text(captured.getvalue())
    seconds = round(time.perf_counter() - started, 1)
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map), "seconds": seconds}


def merge_eval(rows: list[dict], ev: dict) -> None:
    results = (ev.get("report") or {}).get("results") or {}
    for r in rows:
        if not r.get("path"):
            continue
        name = Path(r["path"]).name
        got = results.get(r["path"]) or results.get(name) or next((v for k, v in results.items() if Path(k).name == name), None)
        if got is not None:
            r["map50"], r["map50_95"] = got.get("map50"), got.get("map50_95")
            drop = got.get("map50_drop_points")
            r["map50_delta_points"] = None if drop is None else -drop + 0.0
        elif r["path"] in (ev.get("errors") or {}):
            r["eval_error"] = ev["errors"][r["path"]]


def _fmt(x, spec: str, dash: str = "-") -> str:
    return dash if x is None else format(x, spec)


def _agree(boxes: dict | None, field: str) -> str:
    if not boxes:
        return "-"
    if boxes.get(field) is None:
        return f"unmeasured ({boxes.get('reference_boxes')} boxes)" if field == "f1" else "-"
    return f"{boxes[field]:.3f}"


def pytorch_eval(m: dict) -> dict:
    results = ((m.get("eval") or {}).get("report") or {}).get("results") or {}
    return next(iter(results.values()), {}) if results else {}


def table(m: dict) -> list[str]:
    out = [
        "| artifact kind | file | verification | F1 (images) | mean IoU (images) | F1, mean IoU (held-out) | mAP50 "
        "| Δ mAP50 vs PyTorch (points) | mAP50-95 | build+verify s | size MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref = pytorch_eval(m)
    out.append(
        f"| PyTorch (reference) | `best.pt` | - | - | - | - | {_fmt(ref.get('map50'), '.3f')} | - "
        f"| {_fmt(ref.get('map50_95'), '.3f')} | - | {_fmt(m.get('checkpoint_bytes') and m['checkpoint_bytes'] / 1e6, '.1f')} |"
    )
    for r in m["artifacts"]:
        images, held = (r.get("boxes") or {}).get("images"), (r.get("boxes") or {}).get("heldout")
        held_cell = "-" if not held else f"{_agree(held, 'f1')}, {_agree(held, 'box_iou')}"
        delta = r.get("map50_delta_points")
        map50 = _fmt(r.get("map50"), ".3f", "not run" if r.get("kind") == "tensorrt" else r.get("eval_error", "-"))
        file = f"`{Path(r['path']).name}`" if r.get("path") else "-"
        if r.get("kind") == "tensorrt":
            file = f"`{r['details'].get('kit', 'trt-kit')}/` (build kit)" if r.get("details", {}).get("kit") else "build kit"
        out.append(
            f"| {r['label']} | {file} | {r['verdict'].replace('|', '/')} | {_agree(images, 'f1')} | {_agree(images, 'box_iou')} "
            f"| {held_cell} | {map50} | {'-' if delta is None else f'{delta:+.2f}'} | {_fmt(r.get('map50_95'), '.3f')} "
            f"| {_fmt(r.get('seconds'), '.1f', '(same command)')} | {_fmt(r.get('bytes') and r['bytes'] / 1e6, '.1f')} |"
        )
    return out


def summary(result: dict) -> list[str]:
    models = result["models"]
    head = "| artifact kind | " + " | ".join(f"{m['model']} F1 (images) | {m['model']} Δ mAP50" for m in models) + " |"
    out = [head, "|---|" + "---:|---:|" * len(models)]
    pytorch = "| PyTorch mAP50 (cnnexport eval) | " + " | ".join(
        f"- | {_fmt(pytorch_eval(m).get('map50'), '.3f')}" for m in models
    )
    out.append(pytorch + " |")
    for kind, label in KINDS.items():
        cells = []
        for m in models:
            r = next((a for a in m["artifacts"] if a.get("kind") == kind), None)
            if r is None:
                cells.append("- | -")
                continue
            if kind == "tensorrt":
                cells.append(f"{r['verdict']} | -")
                continue
            f1 = _agree((r.get("boxes") or {}).get("images"), "f1")
            if not r["verdict"].startswith("pass"):
                f1 += f" ({r['verdict'].split(' ')[0]})"
            delta = r.get("map50_delta_points")
            cells.append(f"{f1} | {'-' if delta is None else f'{delta:+.2f}'}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def markdown(result: dict) -> str:
    c = result["cpu"]
    commits = result["commit"] if result.get("commit_after", result["commit"]) == result["commit"] else (
        f"{result['commit']} at the start, {result['commit_after']} at the end"
    )  # fmt: skip
    y26_epochs = next((m["epochs"] for m in result["models"] if m["model"] == "yolo26n"), MODELS["yolo26n"]["epochs"])
    lines = [
        "# Detection: every artifact kind of three YOLOs, judged by its boxes and its mAP",
        "",
        f"Produced by `benchmarks/detect.py` on {result['date']} (run took {result['seconds']:.0f} s):",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"**CPU:** {c['model']}, {c['cores']} cores; flags {', '.join(c['flags'])}; no {', '.join(c['absent'])}. "
        f"Load average {result['loadavg_before']} before, {result['loadavg_after']} after. Every time below is on "
        "this CPU (the INT8 builds calibrate and verify on it; no GPU).",
        "",
        f"**Versions:** {result['versions']}; cnnexport at {commits}.",
        "",
        f"**Data:** one drawn data set for all three models (`exporter.tasks.detect_shapes.write_dataset`: circles, "
        f"squares and triangles on noise, {result['train']} training and {result['val']} validation images at "
        f"{SIZE} px, seed 0; {result['data_seconds']:.1f} s). Each model is trained from scratch on it by "
        "`exporter.tasks.detect_shapes.train_yolo` (Ultralytics on the CPU: SGD lr 0.05, no mosaic), so the mAPs are "
        "those of tiny, briefly trained models: the figures to read are the differences to PyTorch, not the mAPs.",
        "",
        "Every artifact is built by the CLI with `--images shapes/images/val --keep-failed --json` (commands below, "
        "run in the work folder); the INT8 builds calibrate on the training images "
        f"(`--calib shapes/images/train --samples {result['samples']}`, OpenVINO and ONNX INT8 with "
        f"`--holdout {result['holdout']}`). *verification* is each build's own verdict (its JSON report); *F1* and "
        "*mean IoU* are its detection checks against PyTorch (matched-box F1 and the mean IoU of matched boxes, "
        "`docs/detection.md`) on the validation images given to `--images` (the CLI checks the first 16 of a "
        "folder) and, for calibrated builds, on the held-out training images no calibration saw; *mAP50*, "
        "*mAP50-95* and *Δ mAP50* (artifact minus PyTorch, "
        "in points) are one `cnnexport eval best.pt ARTIFACTS... --data shapes/data.yaml` per model, on the "
        f"{result['val']} labelled validation images (faster-coco-eval, Ultralytics' val decoding: conf 0.001, "
        "NMS IoU 0.7, regardless of the builds' `--conf`); *build+verify s* is the wall time of the command (export, "
        "calibration and verification, the CLI's start-up included); *size* the artifact's files.",
        "",
        "**YOLO26n** is judged with `--conf 0.1` on every verb: its NMS-free one-to-one head scores low after "
        f"{y26_epochs} epochs of training, so its boxes are compared from confidence 0.1 on (mAP is not affected: "
        "`cnnexport eval` decodes from 0.001). YOLOv8n and YOLO11n use the default 0.25. Its two mAP figures "
        "measure two heads: Ultralytics' PyTorch `val` uses the one-to-many head with NMS, its default export (and "
        "so cnnexport's reference and every artifact) the NMS-free one-to-one head (docs/detection.md).",
        "",
        '!!! warning "Caveat: a shared machine"',
        "    The machine is shared (2 cores; other work may have been running during the run: see the load average "
        "above). The seconds are wall times of single runs and move by 10-30% between runs; the F1 and mAP figures "
        "do not depend on the load.",
        "",
        "## Summary",
        "",
        "Matched-box F1 against PyTorch on the validation images, and the artifact's mAP50 minus PyTorch's "
        "(points, `cnnexport eval`).",
        "",
        *summary(result),
        "",
    ]
    for m in result["models"]:
        ref, ul = pytorch_eval(m), m.get("ultralytics_val") or {}
        conf = f"`--conf {m['conf']}` on every verb" if m.get("conf") is not None else "default `--conf 0.25`"
        lines += [
            f"## {m['model']}",
            "",
            f"`{m['yaml']}`, {m['epochs']} epochs, trained in {m['train_seconds']:.0f} s; {conf}. "
            f"PyTorch mAP50 {_fmt(ref.get('map50'), '.3f')} / mAP50-95 {_fmt(ref.get('map50_95'), '.3f')} by `cnnexport "
            f"eval`, {_fmt(ul.get('map50'), '.3f')} / {_fmt(ul.get('map50_95'), '.3f')} by Ultralytics' own "
            f"`val` (`rect=False`, {_fmt(ul.get('seconds'), '.1f')} s) on the same {result['val']} images.",
            "",
            *table(m),
            "",
        ]
        stages = [("training", m["train_seconds"])] + [
            (r["verb"], r["seconds"]) for r in m["artifacts"] if r.get("seconds") is not None
        ]
        stages += [("eval", (m.get("eval") or {}).get("seconds")), ("Ultralytics val", ul.get("seconds"))]
        lines.append(
            "* Seconds per stage: "
            + ", ".join(f"{k} {v:.1f}" if v < 10 else f"{k} {v:.0f}" for k, v in stages if v is not None)
            + f"; {sum(v for _, v in stages if v is not None):.0f} in all."
        )
        for r in m["artifacts"]:
            notes = []
            d = r.get("details") or {}
            if r.get("kind") == "tensorrt":
                notes.append(
                    "TensorRT is not installed here: the engine is not built; the kit (the Q/DQ ONNX, its calibration "
                    "cache, `build.sh` with the trtexec command and `verify.sh`) is what an NVIDIA machine builds it from"
                )
            if d.get("float_detect_head_nodes"):
                notes.append(f"{d['float_detect_head_nodes']} detect-head nodes kept in float")
            if d.get("samples_heldout"):
                notes.append(f"{d.get('calibration_samples')} calibration images, {d['samples_heldout']} held out")
            if d.get("portable_ops"):
                notes.append(f"ops left to portable kernels: {d['portable_ops']}")
            images = (r.get("boxes") or {}).get("images")
            if images and images.get("reference_boxes") is not None:
                notes.append(f"{images['reference_boxes']} PyTorch boxes on {images['inputs']}")
            if r.get("eval_error"):
                notes.append(f"eval: {r['eval_error']}")
            if notes:
                lines.append(f"* {r['label']}: " + "; ".join(notes))
        lines += ["", "Commands (in the work folder):", "", "```"]
        lines += [r["command"] for r in m["artifacts"] if r.get("seconds") is not None]
        lines += [(m.get("eval") or {}).get("command", ""), "```", ""]
        if (m.get("eval") or {}).get("error"):
            lines += [f"The one `cnnexport eval` of all artifacts failed ({m['eval']['error']}); each ran alone.", ""]
    lines += [
        "Notes:",
        "",
        "* The TensorRT engine row is `skipped (tensorrt not installed)`: no engine was built or verified here. "
        "Its INT8 Q/DQ ONNX (what the kit's trtexec builds the engine from) is verified and evaluated with onnxruntime.",
        "* Core ML is verified and evaluated by cnnexport's Linux MIL interpreter (fp16 program), not by Core ML "
        "on Apple hardware.",
        "* ExecuTorch lowering fixes a YOLO's batch, so the program is made at batch 1 (`--static-batch 1`, as "
        "Ultralytics' own ExecuTorch export); LiteRT models are made at batch 1 too, and both run batches one "
        "sample at a time.",
        "* `cnnexport eval` (faster-coco-eval) and Ultralytics' val agree within 0.2 points on the same head; "
        "artifacts are compared with PyTorch under one evaluation (`cnnexport eval`), never across the two.",
        "",
    ]
    return "\n".join(lines)


def versions() -> str:
    import importlib.metadata as md

    names = (
        "torch",
        "ultralytics",
        "onnxruntime",
        "openvino",
        "nncf",
        "coremltools",
        "executorch",
        "ai-edge-litert",
        "faster-coco-eval",
    )
    found = []
    for n in names:
        try:
            found.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            found.append(f"{n} absent")
    return ", ".join(found)


def scrub(value, prefixes: list[str]):
    """The result without this machine's paths (the work folder, the checkout): they would be committed."""
    if isinstance(value, str):
        for p in prefixes:
            value = value.replace(p + "/", "").replace(p, ".")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, prefixes) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, prefixes) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, help="training epochs of every model (default: 15, YOLO26n 30)")
    parser.add_argument("--samples", type=int, default=64, help="calibration images of the INT8 builds")
    parser.add_argument("--holdout", type=int, default=32, help="further training images quantize and openvino verify on")
    parser.add_argument("--work", type=Path, help="where the data, runs and artifacts go (default: a new temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave detect.json and DETECT.md alone")
    parser.add_argument("--report-only", action="store_true", help="rewrite DETECT.md from detect.json (nothing is run)")
    args = parser.parse_args()
    if args.report_only:
        MARKDOWN.write_text(markdown(json.loads(JSON_OUT.read_text())))
        print(MARKDOWN.read_text())
        return

    started = time.perf_counter()
    work = (args.work or Path(tempfile.mkdtemp(prefix="cnnexport-detect-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    from exporter.tasks.detect_shapes import train_yolo, write_dataset

    argv = sys.argv[1:]
    for i, arg in enumerate(argv):  # the work folder is this machine's path: never written down
        if arg == "--work" and i + 1 < len(argv):
            argv[i + 1] = "DIR"
        elif arg.startswith("--work="):
            argv[i] = "--work=DIR"
    command = ".venv/bin/python benchmarks/detect.py " + shlex.join(argv)
    result = {
        "command": command.strip(),
        "date": dt.date.today().isoformat(),
        "cpu": cpu(),
        "loadavg_before": loadavg(),
        "versions": versions(),
        "commit": commit(),
        "train": TRAIN,
        "val": VAL,
        "size": SIZE,
        "samples": args.samples,
        "holdout": args.holdout,
        "models": [],
    }
    progress(f"work folder {work}; CPU {result['cpu']['model']} ({', '.join(result['cpu']['flags'])})")
    t = time.perf_counter()
    data = write_dataset(work / DATA, train=TRAIN, val=VAL, size=SIZE)
    result["data_seconds"] = round(time.perf_counter() - t, 1)
    for name in args.models.split(","):
        spec = MODELS[name]
        epochs = args.epochs or spec["epochs"]
        progress(f"{name}: training {spec['yaml']} for {epochs} epochs")
        t = time.perf_counter()
        best = train_yolo(data, work / f"runs-{name}", model=spec["yaml"], epochs=epochs, size=SIZE)
        train_seconds = round(time.perf_counter() - t, 1)
        progress(f"{name}: trained in {train_seconds} s")
        ckpt = str(best.relative_to(work))
        (work / name).mkdir(exist_ok=True)
        rows = []
        for b in builds(name, ckpt, args.samples, args.holdout):
            got = build_one(b, spec["conf"], work, progress)
            for r in got:
                f1 = ((r.get("boxes") or {}).get("images") or {}).get("f1")
                progress(f"{name}: {r['label']}: {r['verdict']} (F1 {f1}; {r.get('seconds')} s)")
            rows += got
        ev = evaluate(ckpt, rows, work, progress)
        merge_eval(rows, ev)
        progress(f"{name}: Ultralytics val")
        val = ultralytics_val(best, data, work)
        result["models"].append(
            {
                "model": name,
                "yaml": spec["yaml"],
                "epochs": epochs,
                "conf": spec["conf"],
                "train_seconds": train_seconds,
                "checkpoint": ckpt,
                "checkpoint_bytes": best.stat().st_size,
                "artifacts": rows,
                "eval": ev,
                "ultralytics_val": val,
            }
        )
    result["loadavg_after"] = loadavg()
    result["commit_after"] = commit()
    result["seconds"] = round(time.perf_counter() - started, 1)
    result = scrub(result, [str(work), str(REPO)])

    text = markdown(result)
    print(text)
    if not args.no_write:
        JSON_OUT.write_text(json.dumps(result, indent=2) + "\n")
        MARKDOWN.write_text(text)
        progress(f"wrote {JSON_OUT.relative_to(REPO)} and {MARKDOWN.relative_to(REPO)} (work folder {work})")


if __name__ == "__main__":
    main()
