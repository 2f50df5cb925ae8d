"""`cnnexport demo --task segment`: the dense counterpart of the digits demo.

Generates a small shapes data set (circles, squares and triangles on noise, one class per shape
plus background), trains architectures' TinyUNet on it for a few seconds, saves a training-style
checkpoint, runs recipes/demo.yaml on it (calibrated on training images, every artifact judged
per pixel on the held-out images too) and reports each artifact's held-out mIoU beside PyTorch's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from exporter.inputs import InputSet

SEED = 0
CLASSES = ("background", "circle", "square", "triangle")
SIZE = 48


def shapes(count: int, seed: int = SEED, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (N, 3, size, size) in [0, 1], masks (N, size, size) of class indices): 1-3 shapes per image on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = rng.normal(0.45, 0.12, (count, 3, size, size))
    masks = np.zeros((count, size, size), np.int64)
    for i in range(count):
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, 4))
            r = rng.uniform(size * 0.14, size * 0.26)
            cx, cy = rng.uniform(r, size - r, 2)
            if kind == 1:
                region = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            elif kind == 2:
                region = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
            else:  # an upright triangle: below the apex, inside both slanted edges
                top, base = cy - r, cy + r
                half = (yy - top) / (2 * r) * r * 1.1
                region = (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half)
            colour = rng.uniform(0.0, 1.0, 3)
            images[i][:, region] = colour[:, None] + rng.normal(0, 0.05, (3, int(region.sum())))
            masks[i][region] = kind
    return np.clip(images, 0, 1).astype(np.float32), masks


def train(model, x: np.ndarray, y: np.ndarray, epochs: int, progress=lambda _: None):
    """The digits demo's training loop, per pixel, in batches of 32."""
    from exporter.demo import train as train_loop

    return train_loop(model, x, y, epochs, progress, lr=2e-2, batch_size=32)


def run_demo(output: Path, epochs: int = 20, progress=lambda _: None, train_samples: int = 512, test_samples: int = 96) -> dict:
    import torch

    from exporter import architectures
    from exporter import recipe as recipes
    from exporter.demo import artifact_row, runnable
    from exporter.errors import CnnexportError
    from exporter.fsutil import ensure_writable_dir, write_text_atomic
    from exporter.inputs import normalize
    from exporter.report import to_json
    from exporter.run import run_recipe
    from exporter.runners.torch import TorchRunner
    from exporter.tasks import segment_eval

    output = ensure_writable_dir(Path(output))
    entry = architectures.get("tiny_unet")
    assert entry is not None  # the registry's own
    spec = entry.spec(len(CLASSES))
    pixels, masks = shapes(train_samples + test_samples)
    x = normalize(pixels, spec)
    train_x, train_y, test_x, test_y = x[:train_samples], masks[:train_samples], x[train_samples:], masks[train_samples:]
    progress(f"training TinyUNet on {train_samples} generated shape images ({SIZE}x{SIZE}), holding out {test_samples}")
    started = time.perf_counter()
    torch.manual_seed(SEED)
    model, optimizer = train(entry.build(num_classes=len(CLASSES)), train_x, train_y, epochs, progress)
    train_seconds = time.perf_counter() - started

    checkpoint = output / "tiny_unet_shapes.pt"
    staged = output / ".tiny_unet_shapes.pt.tmp"
    torch.save(
        {
            "arch": "tiny_unet",
            "epoch": epochs,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "labels": list(CLASSES),
        },
        staged,
    )
    staged.replace(checkpoint)
    np.save(output / "calib_shapes.npy", train_x[:256])
    np.savez(output / "heldout_shapes.npz", images=test_x, masks=test_y)

    heldout = InputSet(f"held-out shapes ({test_samples})", test_x)
    recipe = recipes.load(
        "demo",
        [
            f"calibration.data={output / 'calib_shapes.npy'}",
            "calibration.samples=192",
            "stages.coreml.enabled=true",
            "stages.openvino.enabled=true",
        ],
    )
    run = run_recipe(recipe, checkpoint, output, progress=progress, extra_inputs=[heldout])
    errors = [o for o in run.outcomes if o.status.startswith("error")]
    if errors:
        raise CnnexportError(f"demo stage {errors[0].name}: {errors[0].status}")

    progress("measuring held-out mIoU of every artifact")
    artifacts = [artifact_row(o, output) for o in run.outcomes if o.entry]
    runners = {"pytorch": TorchRunner(model.eval()), **runnable(artifacts)}
    evaluation = segment_eval.evaluate(runners, test_x, test_y, len(CLASSES), description=f"{test_samples} held-out shape images")
    report = {
        "artifacts": artifacts,
        "model": run.manifest["model"],
        "versions": run.manifest["versions"],
        "demo": {
            "task": "segment",
            "dataset": f"generated shapes ({', '.join(CLASSES[1:])} on noise), {SIZE}x{SIZE}",
            "recipe": "demo",
            "train_samples": train_samples,
            "heldout_samples": test_samples,
            "epochs": epochs,
            "train_seconds": round(train_seconds, 2),
            "heldout_miou": {name: r["miou"] for name, r in evaluation["results"].items()},
            "heldout_pixel_accuracy": {name: r["pixel_accuracy"] for name, r in evaluation["results"].items()},
        },
    }
    write_text_atomic(output / "demo-report.json", to_json(report) + "\n")
    return report


def render_accuracy(report: dict, console) -> None:
    from rich.table import Table

    demo = report["demo"]
    table = Table(title=f"held-out mIoU ({demo['heldout_samples']} shape images never seen in training)", title_justify="left")
    for column in ("model", "mIoU", "pixel accuracy", "vs pytorch"):
        table.add_column(column, justify="left" if column == "model" else "right")
    base = demo["heldout_miou"]["pytorch"]
    for name, miou in demo["heldout_miou"].items():
        table.add_row(
            name,
            f"{miou * 100:.2f}%",
            f"{demo['heldout_pixel_accuracy'][name] * 100:.2f}%",
            "-" if name == "pytorch" else f"{(miou - base) * 100:+.2f} pts",
        )
    console.print(table)
