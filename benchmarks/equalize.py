"""INT8 with and without cross-layer equalization (`--equalize`): held-out agreement with PyTorch.

Run:  .venv/bin/python benchmarks/equalize.py [--models smallresnet_x400,resnet18_x400,mobilenet_v2,...]
          [--size 224] [--samples 256] [--holdout 64] [--markdown] [--json]

Each model is quantized twice by cnnexport itself (`build("int8", onnx, {"equalize": ...})`: onnxruntime
static QDQ, uint8 activations, int8 per-channel weights, min/max calibration), and each INT8 model is
verified against PyTorch on the held-out samples its calibration never saw. Reported per model and
setting: the verification's smallest per-sample cosine and top-1 agreement (over samples whose
reference margin is decisive) on those samples, pass/fail by the int8 rule, and what equalization did
(pairs equalized, pairs skipped, largest scale, the fp32 check).

Models:
  smallresnet_x400  tests/small_models.py SmallResNet trained 4 epochs on the digits, then one output
                    channel of layer1.bn1 x400 and the same input channel of layer1.conv2 /400 (the
                    ReLU between is positively homogeneous: the function is unchanged); digits calibration
  resnet18_x400     torchvision resnet18, random weights, BatchNorm statistics from photo crops, the same
                    x400 / /400 on layer1.0.bn1 -> layer1.0.conv2; photo calibration
  mobilenet_v2, mobilenet_v3_small, efficientnet_b0, resnet18
                    torchvision, random weights, BatchNorm statistics from photo crops (as
                    benchmarks/cpu_runtimes.py builds them); photo calibration
  lenet5            LeNet-5 trained 8 epochs on the digits (tanh: no pair to equalize); digits calibration
Photo crops: random crops/flips of scikit-learn's two sample photos (benchmarks/quantize.py), --size
pixels square, ImageNet-normalized; the first --samples calibrate, the next --holdout verify.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

MODELS = "smallresnet_x400,resnet18_x400,resnet18,mobilenet_v2,mobilenet_v3_small,efficientnet_b0,lenet5"
SCALE, CHANNEL = 400.0, 3


def _outlier(state: dict, bn: str, conv: str) -> dict:
    """One channel of ``bn`` x SCALE and the same input channel of ``conv`` / SCALE: the same function through a ReLU."""
    state = {k: v.clone() for k, v in state.items()}
    state[f"{bn}.weight"][CHANNEL] *= SCALE
    state[f"{bn}.bias"][CHANNEL] *= SCALE
    state[f"{conv}.weight"][:, CHANNEL] /= SCALE
    return state


def _digits(name: str, work: Path):
    import torch

    from exporter import architectures, load_checkpoint
    from exporter.demo import train
    from exporter.inputs import digits_arrays
    from tests.small_models import SmallResNet

    train_x, train_y, _, _ = digits_arrays(architectures.get("lenet5").spec(10))
    torch.manual_seed(0)
    path = work / f"{name}.pt"
    if name == "lenet5":
        model, _ = train(architectures.get("lenet5").build(num_classes=10), train_x, train_y, epochs=8)
        torch.save(model.state_dict(), path)
        return load_checkpoint(path, arch="lenet5"), path
    model, _ = train(SmallResNet(), train_x, train_y, epochs=4)
    torch.save(_outlier(model.state_dict(), "layer1.bn1", "layer1.conv2"), path)
    return load_checkpoint(
        path, arch="tests.small_models:SmallResNet", spec_overrides={"input_shape": (1, 32, 32), "mean": (0.5,), "std": (0.5,)}
    ), path


def _photo(name: str, crops, size: int, work: Path):
    import torch
    from quantize import photo_model

    from exporter import load_checkpoint

    arch = name.removesuffix("_x400")
    state = photo_model(arch, crops).state_dict()
    if name.endswith("_x400"):
        state = _outlier(state, "layer1.0.bn1", "layer1.0.conv2")
    path = work / f"{name}.pt"
    torch.save(state, path)
    return load_checkpoint(path, arch=arch, spec_overrides={"input_shape": (3, size, size)}), path


def measure(name: str, args, work: Path, crops, progress) -> dict:
    from exporter.build import build
    from exporter.errors import CnnexportError
    from exporter.pipeline import VerifyOptions

    digits = name in ("lenet5", "smallresnet_x400")
    loaded, ckpt = _digits(name, work) if digits else _photo(name, crops, args.size, work)
    data = "digits" if digits else str(work / "calib.npy")
    calibration = {"data": data, "samples": args.samples, "holdout": args.holdout}
    verify = VerifyOptions(batch_sizes=(1,))
    onnx = build("onnx", ckpt, output=work / f"{name}.onnx", loaded=loaded, verify=verify, write=False)[-1]
    row = {"input": "1x32x32 digits" if digits else f"3x{args.size}x{args.size} photo crops"}
    for equalize in (False, True):
        label = "equalized" if equalize else "plain"
        progress(f"{name}: int8 {label}")
        started = time.perf_counter()
        try:
            result = build(
                "int8",
                onnx.path,
                {"equalize": equalize},
                calibration=calibration,
                loaded=loaded,
                verify=verify,
                output=work / f"{name}.{label}.int8.onnx",
                write=False,
            )[-1]
        except CnnexportError as exc:
            row[label] = {"status": f"error: {exc}"}
            continue
        held = next(c for c in result.verification.checks if c.inputs.startswith("held-out"))
        row[label] = {
            "status": result.verification.status,
            "cosine": held.cosine,
            "top1": held.top1_agreement,
            "max_err_over_range": held.max_rel_err,
            "samples": held.batch_size,
            "seconds": round(time.perf_counter() - started, 1),
        }
        if equalize:
            eq = result.details["equalization"]
            row[label]["equalization"] = {
                k: eq[k]
                for k in (
                    "pairs",
                    "skipped",
                    "batchnorm_folded",
                    "sweeps",
                    "max_scale",
                    "channels_at_scale_limit",
                    "fp32_max_err_over_range",
                )
            }
    return row


def _cell(r: dict) -> str:
    if "cosine" not in r:
        return r["status"]
    return f"{r['cosine']:.4f} / {r['top1']:.3f} ({r['status']})"


def _skips(eq: dict) -> str:
    return (
        ", ".join(
            f"{n} {reason.split(' between')[0] if ' between' in reason else 'fan-out'}" for reason, n in eq["skipped"].items()
        )
        or "none"
    )


def _cpu() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--size", type=int, default=224, help="photo models: input pixels (square)")
    parser.add_argument("--samples", type=int, default=256, help="calibration samples")
    parser.add_argument("--holdout", type=int, default=64, help="held-out samples the INT8 models are judged on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save-json", type=Path, help="also write the measurements to this file")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    import onnxruntime
    import torch
    from quantize import photo_crops

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cnnexport-equalize-"))
    names = args.models.split(",")
    crops = None
    if any(n not in ("lenet5", "smallresnet_x400") for n in names):
        import numpy as np

        crops = photo_crops(max(256, args.samples + args.holdout), args.size)
        np.save(work / "calib.npy", crops[: args.samples + args.holdout])

    def progress(m):
        print(f"• {m}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    report = {
        "machine": f"{_cpu()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "size": args.size,
        "samples": args.samples,
        "holdout": args.holdout,
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "models": {},
    }
    for name in names:
        report["models"][name] = measure(name, args, work, crops, progress)
    report["seconds"] = round(time.perf_counter() - started)
    if args.save_json:
        args.save_json.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    sep = " | " if args.markdown else "  "
    head = [
        "model",
        "input",
        "int8 cosine / top-1",
        "int8 --equalize cosine / top-1",
        "pairs equalized",
        "pairs skipped",
        "max scale",
        "fp32 check",
    ]
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    else:
        print(sep.join(head))
    for name, row in report["models"].items():
        eq = row["equalized"].get("equalization")
        cells = [name, row["input"], _cell(row["plain"]), _cell(row["equalized"])]
        cells += (
            [str(eq["pairs"]), _skips(eq), f"{eq['max_scale']:.1f}", f"{eq['fp32_max_err_over_range']:.1e}"] if eq else [""] * 4
        )
        print(("| " + sep.join(cells) + " |") if args.markdown else sep.join(cells))
    print(
        f"\n{report['machine']}; {report['date']}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
        f"{args.samples} calibration + {args.holdout} held-out samples; {report['seconds']} s"
    )


if __name__ == "__main__":
    main()
