"""INT8 on every int8 target, plain and with `--fallback auto`, beside NNCF's accuracy control on the same ONNX.

Run:  .venv/bin/python benchmarks/int8_targets.py [--models mobilenet_v3_small,mobilenet_v3_large,timm:efficientnet_lite1]
          [--targets executorch,int8,openvino,litert] [--input-shape 3,96,96] [--samples 48] [--holdout 16]
          [--markdown benchmarks/INT8_TARGETS.md]

Each model as issue 42 describes it: 6 classes, random weights with BatchNorm statistics from photo crops
(benchmarks/zoo.py), its head scaled so the logits differ per input (their std over the photos is 3), 48
calibration samples and 16 held out. Every attempt is verified by cnnexport's int8 rule on the held-out
samples in the target's own runtime. "float" is layers kept in float / weighted layers. NNCF's accuracy
control (``nncf.quantize_with_accuracy_control``) runs on the same ONNX through OpenVINO, its metric the
held-out centred cosine against PyTorch and its max drop 1 - 0.98 (the int8 rule's cosine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_MODELS = "mobilenet_v3_small,mobilenet_v3_large,timm:efficientnet_lite1"
DEFAULT_TARGETS = "executorch,int8,openvino,litert"
CLASSES = 6
NNCF_ROUNDS = 15


def make_model(name: str, input_shape, samples: int, work: Path, damping: float = 2.0):
    """(checkpoint, loaded model, calibration .npy) built as the module docstring says."""
    import numpy as np
    import torch
    from zoo import calibration_array, recalibrate_batchnorm

    from exporter import architectures, load_checkpoint

    entry = architectures.get(name)
    spec = entry.spec(CLASSES).with_overrides(input_shape=input_shape)
    torch.manual_seed(0)
    model = entry.build(num_classes=CLASSES)
    data = calibration_array(spec, n=max(96, samples + 32))
    recalibrate_batchnorm(model, [torch.from_numpy(data[s : s + 16]) for s in range(0, 64, 16)], damping=damping)
    model.eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits = model(torch.from_numpy(data[:64]))
        scale = 3.0 / float(logits.std(0).mean())
        head.weight *= scale
        head.bias.copy_(head.bias * scale)
    np.save(work / "calib.npy", data)
    ckpt = work / f"{name.replace(':', '_')}.pt"
    torch.save(model.state_dict(), ckpt)
    loaded = load_checkpoint(
        ckpt, arch=name, spec_overrides={"input_shape": list(spec.input_shape)}, arch_kwargs={"num_classes": CLASSES}
    )
    return ckpt, loaded, work / "calib.npy"


def attempt(target: str, ckpt: Path, onnx: Path, loaded, calibration: dict, work: Path, fallback: bool) -> dict:
    from exporter.build import build
    from exporter.errors import CnnexportError

    options: dict = {} if target == "int8" else {"precision": "int8"}
    if fallback:
        options["fallback"] = "auto"
    source = onnx if target in ("int8", "openvino") else ckpt
    suffix = {"executorch": ".int8.pte", "int8": ".int8.onnx", "openvino": ".int8.xml", "litert": ".int8.tflite"}[target]
    started = time.perf_counter()
    try:
        result = build(
            target, source, options, output=work / f"{target}-{fallback}{suffix}", loaded=loaded,
            calibration=calibration, write=False, keep_failed=True, progress=lambda m: print(f"  {m}", file=sys.stderr),
        )[-1]  # fmt: skip
    except CnnexportError as exc:
        return {"status": f"error ({str(exc)[:160]})", "seconds": round(time.perf_counter() - started, 1)}
    values = result.verification.to_dict()
    rescue = result.details.get("float_fallback") or {}
    return {
        "status": values["status"],
        "cosine": values["cosine"],
        "top1": values["top1_agreement"],
        "float": f"{rescue['kept_in_float']}/{rescue['weighted_layers']}" if rescue else None,
        "decided_by": rescue.get("decided_by"),
        "fix": rescue.get("fix"),
        "layers": rescue.get("layers"),
        "attempts": rescue.get("attempts"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def nncf_accuracy_control(onnx: Path, loaded, calib: Path, samples: int, holdout: int) -> dict:
    """NNCF's accuracy-aware quantization on the ONNX (through OpenVINO), judged by the held-out centred cosine."""
    import nncf
    import numpy as np
    import openvino as ov
    import torch
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from exporter.tasks.elementwise import class_cosine

    data = np.load(calib)
    calib_set, held = data[:samples], data[samples : samples + holdout]
    reference = loaded.module.eval()(torch.from_numpy(held)).detach().numpy().astype(np.float64)
    started = time.perf_counter()

    def validate(compiled, items) -> float:
        out = np.concatenate([compiled(x)[0] for x in items]).astype(np.float64)
        return class_cosine(reference, out)

    quantized = nncf.quantize_with_accuracy_control(
        ov.convert_model(str(onnx)),
        nncf.Dataset([s[None] for s in calib_set]),
        nncf.Dataset([s[None] for s in held]),
        validation_fn=validate,
        max_drop=0.02,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=samples,
        # bounded like `--fallback auto`'s default budget: at most this many reverting rounds
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=NNCF_ROUNDS),
    )
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    cosine = validate(compiled, [s[None] for s in held])
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    return {
        "cosine": round(cosine, 5),
        "fake_quantize": fake_quantize,
        "seconds": round(time.perf_counter() - started, 1),
        "max_rounds": NNCF_ROUNDS,
    }


def run(name: str, targets: list[str], input_shape, samples: int, holdout: int, work: Path, damping: float = 2.0) -> dict:
    from exporter.build import build

    ckpt, loaded, calib = make_model(name, input_shape, samples, work, damping)
    onnx = build("onnx", ckpt, output=work / f"{ckpt.stem}.onnx", loaded=loaded, write=False)[-1].path
    calibration = {"data": str(calib), "samples": samples, "holdout": holdout}
    row: dict = {}
    for target in targets:
        for fallback in (False, True):
            label = f"{target}{' --fallback auto' if fallback else ''}"
            row[label] = attempt(target, ckpt, onnx, loaded, calibration, work, fallback)
            print(f"• {name} {label}: {json.dumps(row[label])[:400]}", file=sys.stderr, flush=True)
            if not fallback and row[label]["status"] == "pass":
                break  # plain passes: nothing to rescue
    try:
        row["nncf accuracy control"] = nncf_accuracy_control(onnx, loaded, calib, samples, holdout)
    except Exception as exc:  # noqa: BLE001 - a benchmark row, not a verdict
        row["nncf accuracy control"] = {"status": f"error ({str(exc)[:200]})"}
    print(f"• {name} nncf: {row['nncf accuracy control']}", file=sys.stderr, flush=True)
    return row


def cell(entry: dict | None) -> str:
    if not entry:
        return "—"
    if "fake_quantize" in entry:
        return f"cos {entry['cosine']:.4f}, {entry['fake_quantize']} FakeQuantize; {entry['seconds']}s"
    if "cosine" not in entry:
        return entry["status"]
    text = f"{entry['status']} (cos {entry['cosine']:.4f}"
    if entry.get("float"):
        text += f", {entry['float']} float"
        if entry.get("fix") not in (None, "none"):
            text += f", fix: {entry['fix']}"
    return text + f"; {entry['seconds']}s)"


def markdown(results: dict, targets: list[str], header: str) -> str:
    columns = [c for t in targets for c in (t, f"{t} --fallback auto")] + ["nncf accuracy control"]
    lines = [header, "", "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--targets", default=DEFAULT_TARGETS)
    parser.add_argument("--input-shape", default="3,96,96")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--holdout", type=int, default=16)
    parser.add_argument(
        "--damping", type=float, default=2.0, help="BatchNorm variance x this (benchmarks/zoo.py); 1 = exact statistics"
    )
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shape = [int(v) for v in args.input_shape.split(",")]
    targets = args.targets.split(",")
    results = {}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="cnnexport-int8-targets-") as work:
            results[name] = run(name, targets, shape, args.samples, args.holdout, Path(work), args.damping)
    header = (
        f"INT8 per target (input {args.input_shape}, {CLASSES} classes, {args.samples} calibration samples, "
        f"{args.holdout} held out, BatchNorm damping {args.damping:g}; "
        "int8 rule: cosine >= 0.98, top-1 agreement >= 0.9, max err <= 0.25 x range)"
    )
    text = markdown(results, targets, header)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
