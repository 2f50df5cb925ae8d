"""`cnnexport demo`: the whole job on real, embedded data.

Trains LeNet-5 on scikit-learn's 1,797 handwritten digits (8x8, upsampled to 32x32), saves
a training-style checkpoint, loads it back the way a user's file is loaded, exports every
artifact kind available here, verifies each (random inputs at two batch sizes plus the
held-out digits) and reports each artifact's held-out accuracy next to PyTorch's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path

import numpy as np

from exporter.inputs import InputSet

SEED = 0


def train(model, train_x, train_y, epochs: int, progress=lambda _: None, lr: float = 3e-3):
    """Plain Adam + cross-entropy training in batches of 64 (seeded)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        progress(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")
    return model.eval(), optimizer


def run_demo(output: Path, epochs: int = 12, progress=lambda _: None) -> dict:
    import torch

    import architectures
    from exporter.inputs import DIGITS, digits_arrays
    from exporter.checkpoint import load_checkpoint
    from exporter.eval import accuracy
    from exporter.fsutil import ensure_writable_dir, write_text_atomic
    from exporter.pipeline import QuantizeOptions, VerifyOptions, export_artifact, quantize_artifact, simplify_artifact
    from exporter.report import build_report, to_json
    from exporter.runners import open_runner
    from exporter.runners.torch import TorchRunner

    output = ensure_writable_dir(Path(output))
    spec = architectures.get("lenet5").spec(10)
    train_x, train_y, test_x, test_y = digits_arrays(spec, SEED)
    progress(f"training LeNet-5 on {len(train_x)} digits, holding out {len(test_x)}")
    started = time.perf_counter()
    torch.manual_seed(SEED)
    model, optimizer = train(architectures.get("lenet5").build(num_classes=10), train_x, train_y, epochs, progress)
    train_seconds = time.perf_counter() - started

    checkpoint = output / "lenet5_digits.pt"
    staged = output / ".lenet5_digits.pt.tmp"
    torch.save(
        {
            "arch": "lenet5",
            "epoch": epochs,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "labels": [str(d) for d in range(10)],
        },
        staged,
    )
    staged.replace(checkpoint)
    np.save(output / "heldout_digits.npy", test_x)
    loaded = load_checkpoint(checkpoint)

    heldout = InputSet(f"held-out digits ({len(test_x)})", test_x)
    opts = VerifyOptions(extra_inputs=[heldout])
    results = [
        export_artifact("torchscript", loaded, output / "lenet5_digits.ts", {}, opts, progress=progress),
        export_artifact("onnx", loaded, output / "lenet5_digits.onnx", {}, opts, progress=progress),
    ]
    if results[-1].files:
        results.append(simplify_artifact(results[-1].path, None, loaded, opts, progress=progress))
    if results[-1].files:
        # calibrate on training digits only; the held-out digits verify and measure accuracy
        fp32 = results[-1].path
        for precision in ("int8", "fp16"):
            quant = QuantizeOptions(precision=precision, calibration=DIGITS, samples=512, seed=SEED)
            output_name = output / f"lenet5_digits.{precision}.onnx"
            results.append(quantize_artifact(fp32, quant, output_name, loaded, opts, progress=progress))

    if importlib.util.find_spec("coremltools") is not None:
        # Core ML fp16 ML program; on Linux its verification and held-out accuracy run through
        # cnnexport's MIL interpreter (exporter/mil), on macOS through Core ML itself.
        coreml_opts = dataclasses.replace(opts, precision="fp16")
        results.append(export_artifact("coreml", loaded, output / "lenet5_digits.mlpackage", {"precision": "fp16"}, coreml_opts, progress=progress))

    progress("measuring held-out accuracy of every artifact")
    accuracies = {"pytorch": accuracy(TorchRunner(loaded.module), test_x, test_y)}
    for result in results:
        if result.files:
            accuracies[result.path.name] = accuracy(open_runner(result.path), test_x, test_y)
    report = build_report(
        results,
        loaded,
        extra={
            "demo": {
                "dataset": "scikit-learn load_digits, 8x8 upsampled to 32x32",
                "train_samples": int(len(train_x)),
                "heldout_samples": int(len(test_x)),
                "epochs": epochs,
                "train_seconds": round(train_seconds, 2),
                "heldout_accuracy": accuracies,
            }
        },
    )
    write_text_atomic(output / "demo-report.json", to_json(report) + "\n")
    return report


def render_accuracy(report: dict, console) -> None:
    from rich.table import Table

    demo = report["demo"]
    table = Table(title=f"held-out accuracy ({demo['heldout_samples']} digits never seen in training)", title_justify="left")
    table.add_column("model")
    table.add_column("top-1 accuracy", justify="right")
    table.add_column("vs pytorch", justify="right")
    base = demo["heldout_accuracy"]["pytorch"]
    for name, acc in demo["heldout_accuracy"].items():
        table.add_row(name, f"{acc * 100:.2f}%", "-" if name == "pytorch" else f"{(acc - base) * 100:+.2f} pts")
    console.print(table)
