"""INT8 / FP16 speed on this CPU, measured side by side in one run.

Run:  .venv/bin/python benchmarks/quantize.py [--batch 32] [--threads 2] [--seconds 8] [--samples 512]

Builds resnet18 (random weights, BatchNorm statistics calibrated on real photo crops),
exports fp32 ONNX with cnnexport, quantizes INT8 (cpu target: uint8 activations, int8
per-channel weights), INT8 symmetric int8/int8 (tensorrt target, for comparison) and FP16,
then times torch eager and every ONNX model at the same batch and thread count, interleaving
the runs so machine noise hits them all alike. Prints throughput and ratios; targets are
reported, never enforced. Also reports the wall time and peak memory of calibrating on
--samples images (a separate process, so its peak RSS is the calibration's own).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CALIBRATE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from exporter.build import build
    from exporter.pipeline import VerifyOptions
    started = time.perf_counter()
    result = build("int8", sys.argv[1], calibration={"data": sys.argv[2], "samples": int(sys.argv[3]), "holdout": 32},
                   output=sys.argv[4], verify=VerifyOptions(enabled=False), write=False)[-1]
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "batches": result.details["calibration_batches"]}))
    """
)


def photo_crops(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """n random crops/flips of scikit-learn's two sample photos, normalized like ImageNet (NCHW)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [p.astype(np.float32) / 255.0 for p in load_sample_images().images]
    out = np.empty((n, 3, size, size), np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    for i in range(n):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - size)
        x = rng.integers(0, photo.shape[1] - size)
        crop = photo[y : y + size, x : x + size].transpose(2, 0, 1)
        out[i] = ((crop[:, :, ::-1] if rng.random() < 0.5 else crop) - mean) / std
    return out


def photo_model(name: str, crops: np.ndarray, samples: int = 256, batch: int = 32):
    """A registry model with seeded random weights and BatchNorm statistics from the first ``samples``
    photo crops (random-init outputs are ~0 otherwise), in eval mode."""
    import torch

    from exporter import architectures

    torch.manual_seed(0)
    module = architectures.get(name).build()
    module.train()
    with torch.no_grad():
        for start in range(0, samples, batch):
            module(torch.from_numpy(crops[start : start + batch]))
    return module.eval()


def throughput(fn, batch: np.ndarray, seconds: float) -> float:
    fn(batch)  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn(batch)
        runs += 1
    return runs * len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    import torch

    from exporter import architectures, export_artifact, load_checkpoint
    from exporter.build import build
    from exporter.pipeline import VerifyOptions

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cnnexport-bench-"))
    crops = photo_crops(args.samples + 64)
    np.save(work / "calib.npy", crops)
    torch.manual_seed(0)
    model = architectures.get("resnet18").build()
    model.train()
    with torch.no_grad():
        for start in range(0, 256, 32):
            model(torch.from_numpy(crops[start : start + 32]))
    torch.save(model.eval().state_dict(), work / "resnet18.pt")
    loaded = load_checkpoint(work / "resnet18.pt")
    fp32 = export_artifact("onnx", loaded, work / "resnet18.onnx").path
    quiet = VerifyOptions(enabled=False)
    models = {"onnx fp32": fp32}
    calib = {"data": str(work / "calib.npy"), "samples": 256}
    for label, kind, data in (
        ("onnx int8 (cpu: u8 act / s8 weight)", "int8", calib),
        ("onnx int8 (trt: s8/s8 symmetric)", "int8_tensorrt", calib),
        ("onnx fp16", "fp16", None),
    ):
        out = work / f"resnet18.{kind}.onnx"
        models[label] = build(kind, fp32, calibration=data, output=out, loaded=loaded, verify=quiet, write=False)[-1].path

    sessions = {}
    for label, path in models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sessions[label] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    batch = crops[: args.batch]
    # accuracy next to speed: the last 64 crops were never used to calibrate (samples=256 of the first ones)
    held = crops[-64:]
    with torch.no_grad():
        reference = loaded.module(torch.from_numpy(held)).numpy().astype(np.float64)
    accuracy = {}
    for label, sess in sessions.items():
        out = sess.run(None, {"input": held})[0].astype(np.float64)
        cosine = np.sum(out * reference, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))
        graph = onnx.load(str(models[label])).graph
        ints = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT32}
        accuracy[label] = {
            "min_cosine": float(cosine.min()),
            "top1_agreement": float(np.mean(out.argmax(1) == reference.argmax(1))),
            "int32_bias_dequantize": sum(n.op_type == "DequantizeLinear" and n.input[0] in ints for n in graph.node),
        }

    def torch_eager(x):
        with torch.no_grad():
            loaded.module(torch.from_numpy(x))

    runners = {"torch eager fp32": torch_eager}
    for label, sess in sessions.items():
        runners[label] = lambda x, s=sess: s.run(None, {"input": x})
    results = {label: [] for label in runners}
    for _ in range(args.rounds):  # interleaved rounds: noise hits every model alike
        for label, fn in runners.items():
            results[label].append(throughput(fn, batch, args.seconds))
    median = {label: float(np.median(v)) for label, v in results.items()}

    calib = subprocess.run(
        [sys.executable, "-c", CALIBRATE_SCRIPT, str(fp32), str(work / "calib.npy"), str(args.samples), str(work / "c.onnx")],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    calibration = json.loads(calib.stdout.strip().splitlines()[-1])

    int8 = median["onnx int8 (cpu: u8 act / s8 weight)"]
    report = {
        "model": "resnet18",
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "images_per_second": median,
        "ratios": {
            "int8_cpu_vs_onnx_fp32": int8 / median["onnx fp32"],
            "int8_cpu_vs_torch_eager": int8 / median["torch eager fp32"],
            "int8_trt_symmetric_vs_onnx_fp32": median["onnx int8 (trt: s8/s8 symmetric)"] / median["onnx fp32"],
            "fp16_vs_onnx_fp32": median["onnx fp16"] / median["onnx fp32"],
            "onnx_fp32_vs_torch_eager": median["onnx fp32"] / median["torch eager fp32"],
        },
        "targets": {"int8_cpu_vs_onnx_fp32": 2.8, "int8_cpu_vs_torch_eager": 6.0},
        "held_out_accuracy": accuracy,
        "calibration": {"samples": args.samples, **calibration},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"resnet18, batch {args.batch}, {args.threads} threads, median of {args.rounds} interleaved rounds of {args.seconds:g}s"
    )
    print(f"{'model':42} {'images/s':>10} {'vs onnx fp32':>13} {'vs torch':>9}")
    for label, ips in median.items():
        print(f"{label:42} {ips:10.1f} {ips / median['onnx fp32']:12.2f}x {ips / median['torch eager fp32']:8.2f}x")
    print(f"{'held-out vs torch (64 crops)':42} {'min cosine':>10} {'top-1 agree':>13} {'int32 bias DQ':>14}")
    for label, acc in accuracy.items():
        print(f"{label:42} {acc['min_cosine']:10.5f} {acc['top1_agreement']:13.3f} {acc['int32_bias_dequantize']:14d}")
    r = report["ratios"]
    print(
        f"INT8 (cpu) vs ONNX fp32: {r['int8_cpu_vs_onnx_fp32']:.2f}x "
        f"(target >= 2.8x: {'met' if r['int8_cpu_vs_onnx_fp32'] >= 2.8 else 'NOT met'})"
    )
    print(
        f"INT8 (cpu) vs torch eager: {r['int8_cpu_vs_torch_eager']:.2f}x "
        f"(target >= 6x: {'met' if r['int8_cpu_vs_torch_eager'] >= 6 else 'NOT met'})"
    )
    c = report["calibration"]
    print(
        f"calibration on {c['samples']} samples: {c['seconds']:.1f}s wall, "
        f"peak RSS {c['peak_rss_mb']:.0f} MB ({c['batches']} batches of 16)"
    )


if __name__ == "__main__":
    main()
