"""`cnnexport demo`: the whole job on real, embedded data.

Trains LeNet-5 on scikit-learn's 1,797 handwritten digits (8x8, upsampled to 32x32), saves
a training-style checkpoint, loads it back the way a user's file is loaded, exports every
artifact kind available here by running recipes/demo.yaml, verifies each (random inputs at two
batch sizes plus the held-out digits) and reports each artifact's held-out accuracy next to PyTorch's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from exporter.inputs import InputSet

SEED = 0


def train(model, train_x, train_y, epochs: int, progress=lambda _: None, lr: float = 3e-3, batch_size: int = 64):
    """Plain Adam + cross-entropy training (per sample, or per pixel for class maps), seeded."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        progress(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")
    return model.eval(), optimizer


ANDROID_STAGES = ("executorch", "executorch_int8", "litert", "litert_int8")


def run_demo(output: Path, epochs: int = 12, progress=lambda _: None) -> dict:
    """Train, save, then run recipes/demo.yaml on the checkpoint with the held-out digits as one more verification set."""
    import torch

    from exporter import architectures
    from exporter import recipe as recipes
    from exporter.errors import CnnexportError
    from exporter.fsutil import ensure_writable_dir, write_text_atomic
    from exporter.inputs import digits_arrays
    from exporter.measure.eval import accuracy
    from exporter.report import to_json
    from exporter.run import run_recipe

    output = ensure_writable_dir(Path(output))
    entry = architectures.get("lenet5")
    assert entry is not None  # the registry's own
    spec = entry.spec(10)
    train_x, train_y, test_x, test_y = digits_arrays(spec, SEED)
    progress(f"training LeNet-5 on {len(train_x)} digits, holding out {len(test_x)}")
    started = time.perf_counter()
    torch.manual_seed(SEED)
    model, optimizer = train(entry.build(num_classes=10), train_x, train_y, epochs, progress)
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

    heldout = InputSet(f"held-out digits ({len(test_x)})", test_x)
    # the shipped demo recipe, plus the Core ML package (checked by the MIL interpreter on Linux)
    # an OpenVINO INT8 IR (NNCF, calibrated on the same training digits) and the Android programs
    # (ExecuTorch and LiteRT, fp32 and INT8), each run by its own runtime; and TensorRT: an engine
    # where TensorRT is installed, else skipped (tensorrt not installed) with its build kit
    recipe = recipes.load(
        "demo",
        ["stages.coreml.enabled=true", "stages.openvino.enabled=true", "stages.openvino.precision=int8"]
        + [f"stages.{stage}.enabled=true" for stage in ANDROID_STAGES]
        + ["stages.tensorrt.enabled=true"],
    )
    run = run_recipe(recipe, checkpoint, output, progress=progress, extra_inputs=[heldout])
    errors = [o for o in run.outcomes if o.status.startswith("error")]
    if errors:
        raise CnnexportError(f"demo stage {errors[0].name}: {errors[0].status}")

    progress("measuring held-out accuracy of every artifact")
    from exporter.runners.torch import TorchRunner

    accuracies = {"pytorch": accuracy(TorchRunner(model.eval()), test_x, test_y)}
    artifacts = [artifact_row(o, output) for o in run.outcomes if o.entry]
    for name, runner in runnable(artifacts).items():
        accuracies[name] = accuracy(runner, test_x, test_y)
    report = {
        "artifacts": artifacts,
        "model": run.manifest["model"],
        "versions": run.manifest["versions"],
        "demo": {
            "dataset": "scikit-learn load_digits, 8x8 upsampled to 32x32",
            "recipe": "demo",
            "train_samples": int(len(train_x)),
            "heldout_samples": int(len(test_x)),
            "epochs": epochs,
            "train_seconds": round(train_seconds, 2),
            "heldout_accuracy": accuracies,
        },
    }
    write_text_atomic(output / "demo-report.json", to_json(report) + "\n")
    return report


def runnable(artifacts: list[dict]) -> dict:
    """{file name: runner} of every installed artifact that can run here (not `skipped`, e.g. an op the MIL interpreter lacks)."""
    from exporter.runners import open_runner

    return {
        Path(a["path"]).name: open_runner(Path(a["path"]))
        for a in artifacts
        if a["files"] and a["verification"]["status"] != "skipped"
    }


def artifact_row(outcome, out_dir: Path) -> dict:
    """A recipe stage's manifest entry in the shape of a verb's report entry."""
    entry = outcome.entry
    files = [str(out_dir / f["path"]) for f in entry["files"]]
    kit = entry["details"].get("kit")  # a TensorRT build kit (no TensorRT here): the row names its folder
    return {
        "kind": entry["kind"],
        "path": str(out_dir / kit) if kit else files[0] if files else outcome.name,
        "files": files,
        "sha256": entry["files"][0]["sha256"] if files else None,
        "bytes": sum(f["bytes"] for f in entry["files"]) if files else None,
        "seconds": round(outcome.seconds, 3),
        "cached": outcome.cached,
        "details": entry["details"],
        "verification": entry["verification"],
    }


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
