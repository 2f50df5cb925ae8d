"""The zoo's INT8 refusals, retried: plain, --equalize, --fallback greedy, --fallback auto, one line per model.

Run:  .venv/bin/python benchmarks/int8_rescue.py [--models swin_v2_s,timm:nf_regnet_b0,timm:repvit_m0_9]
          [--input-shape 3,64,64] [--samples 64] [--markdown benchmarks/INT8_RESCUE.md]
      .venv/bin/python benchmarks/int8_rescue.py --digits   # the two trained digits nets with an outlier channel

Models are built exactly as benchmarks/zoo.py builds them (random weights, BatchNorm statistics
from photo crops, the same calibration array and held-out split); every attempt is verified by
cnnexport's int8 rule on the held-out samples. Prints held-out cosine, top-1 agreement, and for
--fallback auto how many layers stayed in float.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT = "swin_v2_s,timm:nf_regnet_b0,timm:repvit_m0_9"
ATTEMPTS = {
    "plain": {},
    "--equalize": {"equalize": True},
    "--fallback greedy": {"fallback": "greedy"},
    "--fallback auto": {"fallback": "auto"},  # ranked (issue 42): cheap fixes (equalization among them), then layers
}


def run(name: str, input_shape, samples: int, work: Path) -> dict:
    import numpy as np
    import torch
    from zoo import calibration_array, recalibrate_batchnorm

    from exporter import architectures, load_checkpoint
    from exporter.build import build
    from exporter.errors import CnnexportError

    entry = architectures.get(name)
    spec = entry.spec().with_overrides(input_shape=input_shape) if input_shape else entry.spec()
    torch.manual_seed(0)
    model = entry.build()
    data = calibration_array(spec)
    np.save(work / "calib.npy", data)
    recalibrate_batchnorm(model, [torch.from_numpy(data[s : s + 16]) for s in range(0, min(len(data), 64), 16)])
    ckpt = work / f"{name.replace(':', '_')}.pt"
    torch.save(model.eval().state_dict(), ckpt)
    loaded = load_checkpoint(ckpt, arch=name, spec_overrides={"input_shape": spec.input_shape})
    onnx = build("onnx", ckpt, output=work / f"{ckpt.stem}.onnx", loaded=loaded, write=False)[-1].path
    calibration = {"data": str(work / "calib.npy"), "samples": samples, "holdout": 16}
    out = {}
    for label, options in ATTEMPTS.items():
        started = time.perf_counter()
        try:
            result = build(
                "int8",
                onnx,
                options,
                output=work / f"{ckpt.stem}.{len(out)}.int8.onnx",
                loaded=loaded,
                calibration=calibration,
                write=False,
                keep_failed=True,
            )[-1]
            v = result.verification
            fallback = result.details.get("float_fallback")
            out[label] = {
                "status": v.status,
                "cosine": v.to_dict()["cosine"],
                "top1": v.to_dict()["top1_agreement"],
                "float_layers": None if fallback is None else f"{fallback['kept_in_float']}/{fallback['weighted_layers']}",
                "equalized_pairs": (result.details.get("equalization") or {}).get("pairs"),
                "reason": v.reason[:160] if v.status != "pass" else "",
                "seconds": round(time.perf_counter() - started, 1),
            }
        except CnnexportError as exc:
            out[label] = {"status": f"error ({str(exc)[:160]})", "seconds": round(time.perf_counter() - started, 1)}
        print(f"• {name} {label}: {out[label]}", file=sys.stderr, flush=True)
    return out


# Trained on the digits, then one BatchNorm channel x400 and the conv reading it /400: the same function,
# an activation one channel dominates (what tests/test_debug.py builds).
OUTLIERS = {
    "SmallResNet (10 layers)": ("SmallResNet", "layer2.bn1", "layer2.conv2", 4),
    "SixLayerCNN (6 layers)": ("SixLayerCNN", "features.5", "features.8", 6),
}


def run_digits(label: str, work: Path) -> dict:
    """plain / --equalize / --fallback auto (--eval digits --max-drop 1) on a trained digits net with an outlier channel."""
    import torch

    import tests.small_models as small
    from exporter import architectures, load_checkpoint
    from exporter.build import build
    from exporter.demo import train
    from exporter.errors import CnnexportError
    from exporter.inputs import digits_arrays

    name, bn_path, reader_path, epochs = OUTLIERS[label]
    train_x, train_y, _, _ = digits_arrays(architectures.get("lenet5").spec(10))
    torch.manual_seed(0)
    model, _ = train(getattr(small, name)(), train_x, train_y, epochs=epochs)
    with torch.no_grad():
        bn, reader = model.get_submodule(bn_path), model.get_submodule(reader_path)
        bn.weight[3] *= 400
        bn.bias[3] *= 400
        reader.weight[:, 3] /= 400
    ckpt = work / f"{name}.pt"
    torch.save(model.state_dict(), ckpt)
    loaded = load_checkpoint(
        ckpt, arch=f"tests.small_models:{name}", spec_overrides={"input_shape": (1, 32, 32), "mean": (0.5,), "std": (0.5,)}
    )
    onnx = build("onnx", ckpt, output=work / f"{name}.onnx", loaded=loaded, write=False)[-1].path
    out = {}
    for attempt, options in ATTEMPTS.items():
        started = time.perf_counter()
        extra = {"max_drop": 1.0} if "fallback" in options else {}
        try:
            result = build(
                "int8",
                onnx,
                {**options, **extra},
                output=work / f"{name}.{len(out)}.int8.onnx",
                loaded=loaded,
                calibration={"data": "digits"},
                evaluation="digits",
                write=False,
                keep_failed=True,
            )[-1]
            v, fallback = result.verification, result.details.get("float_fallback")
            evaluation = (result.details.get("eval") or {}).get("results", {}).get(result.path.name, {})
            out[attempt] = {
                "status": v.status,
                "cosine": v.to_dict()["cosine"],
                "top1": v.to_dict()["top1_agreement"],
                "drop": evaluation.get("top1_drop_points"),
                "float_layers": None if fallback is None else f"{fallback['kept_in_float']}/{fallback['weighted_layers']}",
                "seconds": round(time.perf_counter() - started, 1),
            }
        except CnnexportError as exc:
            out[attempt] = {"status": f"error ({str(exc)[:160]})", "seconds": round(time.perf_counter() - started, 1)}
        print(f"• {label} {attempt}: {out[attempt]}", file=sys.stderr, flush=True)
    return out


def table(title: str, rows: dict) -> str:
    """One markdown table: a row per model, a cell per attempt (verdict, cosine, agreement, drop, layers in float)."""
    lines = [title, "", "| model | " + " | ".join(ATTEMPTS) + " |", "|---|" + "---|" * len(ATTEMPTS)]
    for name, attempts in rows.items():
        cells = []
        for attempt in ATTEMPTS:
            a = attempts[attempt]
            if a["status"] in ("pass", "fail"):
                extra = f", {a['float_layers']} layers float" if a.get("float_layers") else ""
                drop = f", drop {a['drop']:.2f} pts" if a.get("drop") is not None else ""
                cells.append(f"{a['status']} (cos {a['cosine']:.4f}, top-1 {a['top1']:.3f}{drop}{extra}; {a['seconds']}s)")
            else:
                cells.append(a["status"])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def digits_table() -> str:
    rows = {}
    for label in OUTLIERS:
        with tempfile.TemporaryDirectory(prefix="cnnexport-rescue-") as work:
            rows[label] = run_digits(label, Path(work))
    return table(
        "Digits nets with an outlier channel (input 1,32,32, calibration: the digits' calibration split, held-out "
        "64; --fallback auto with --eval digits --max-drop 1; drop = held-out top-1 points lost vs PyTorch)",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT)
    parser.add_argument("--input-shape", default="3,64,64")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--digits", action="store_true", help="the trained digits nets with an outlier channel instead")
    args = parser.parse_args()
    if args.digits:
        print(digits_table())
        return
    shape = tuple(int(x) for x in args.input_shape.split(",")) if args.input_shape else None
    rows = {}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="cnnexport-rescue-") as work:
            rows[name] = run(name, shape, args.samples, Path(work))
    text = table(
        f"INT8 rescue (input {args.input_shape}, {args.samples} calibration samples, held-out 16; int8 rule: "
        "cosine >= 0.98, top-1 agreement >= 0.9, max err <= 0.25 x range)",
        rows,
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
