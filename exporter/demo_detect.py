"""`cnnexport demo --task detect`: the detection counterpart of the digits demo (needs the ultralytics extra).

Draws a small shapes data set (exporter/tasks/detect_shapes.py), trains a YOLO11n on it with
Ultralytics on the CPU, runs recipes/demo.yaml on its best.pt (plus Core ML and OpenVINO INT8,
calibrated on the training images, every artifact judged by matched boxes on the held-out images
too), and reports each artifact's held-out mAP50 / mAP50-95 beside PyTorch's (faster-coco-eval).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

SIZE = 128
TRAIN, HELDOUT = 96, 32


def run_demo(output: Path, epochs: int = 15, progress=lambda _: None) -> dict:
    from PIL import Image

    from exporter import recipe as recipes
    from exporter.demo import artifact_row, runnable
    from exporter.errors import CnnexportError
    from exporter.fsutil import ensure_writable_dir, write_text_atomic
    from exporter.inputs import InputSet, image_source, list_images
    from exporter.loading.checkpoint import load_checkpoint
    from exporter.report import to_json
    from exporter.run import run_recipe
    from exporter.runners.torch import TorchRunner
    from exporter.sources.ultralytics import OUTPUT_NAME, require_ultralytics
    from exporter.tasks import detect_eval, detect_shapes

    output = ensure_writable_dir(Path(output))
    checkpoint = output / "yolo11n_shapes.pt"
    require_ultralytics(checkpoint)
    data = detect_shapes.write_dataset(output / "shapes", TRAIN, HELDOUT, size=SIZE)
    progress(f"training YOLO11n with Ultralytics on {TRAIN} drawn shape images ({SIZE}x{SIZE}), holding out {HELDOUT}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnexport-yolo-") as runs:
        best = detect_shapes.train_yolo(data, Path(runs), epochs=epochs, size=SIZE)
        shutil.copyfile(Path(runs) / "train.log", output / "yolo-train.log")
        staged = output / ".yolo11n_shapes.pt.tmp"
        shutil.copyfile(best, staged)
        staged.replace(checkpoint)
    train_seconds = time.perf_counter() - started

    loaded = load_checkpoint(checkpoint)
    heldout_dir = data.parent / "images" / "val"
    heldout = image_source(heldout_dir, loaded.spec).take()
    recipe = recipes.load(
        "demo",
        [
            f"calibration.data={data.parent / 'images' / 'train'}",
            f"calibration.samples={TRAIN}",
            "stages.coreml.enabled=true",
            "stages.openvino.enabled=true",
            "stages.openvino.precision=int8",
        ],
    )
    extra = [InputSet(f"held-out shapes ({HELDOUT})", heldout)]
    run = run_recipe(recipe, checkpoint, output, progress=progress, extra_inputs=extra)
    errors = [o for o in run.outcomes if o.status.startswith("error")]
    if errors:
        raise CnnexportError(f"demo stage {errors[0].name}: {errors[0].status}")

    progress("measuring held-out mAP of every artifact")
    truths = []
    for image in list_images(heldout_dir):
        with Image.open(image) as opened:
            width, height = opened.size
        truths.append(detect_eval.yolo_labels(data.parent / "labels" / "val" / f"{image.stem}.txt", width, height, SIZE, SIZE))
    artifacts = [artifact_row(o, output) for o in run.outcomes if o.entry]
    runners = {"pytorch": TorchRunner(loaded.module), **runnable(artifacts)}
    scores = detect_eval.evaluate(runners, heldout, truths, len(detect_shapes.CLASSES), OUTPUT_NAME)
    report = {
        "artifacts": artifacts,
        "model": run.manifest["model"],
        "versions": run.manifest["versions"],
        "demo": {
            "task": "detect",
            "dataset": f"drawn shapes ({', '.join(detect_shapes.CLASSES)} on noise), {SIZE}x{SIZE}",
            "recipe": "demo",
            "train_samples": TRAIN,
            "heldout_samples": HELDOUT,
            "epochs": epochs,
            "train_seconds": round(train_seconds, 2),
            "heldout_map50": {name: s["map50"] for name, s in scores.items()},
            "heldout_map50_95": {name: s["map50_95"] for name, s in scores.items()},
        },
    }
    write_text_atomic(output / "demo-report.json", to_json(report) + "\n")
    return report


def render_accuracy(report: dict, console) -> None:
    from rich.table import Table

    demo = report["demo"]
    table = Table(title=f"held-out mAP ({demo['heldout_samples']} shape images never seen in training)", title_justify="left")
    for column in ("model", "mAP50", "mAP50-95", "vs pytorch (mAP50)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    base = demo["heldout_map50"]["pytorch"]
    for name, map50 in demo["heldout_map50"].items():
        table.add_row(
            name,
            f"{map50:.3f}",
            f"{demo['heldout_map50_95'][name]:.3f}",
            "-" if name == "pytorch" else f"{(map50 - base) * 100:+.2f} pts",
        )
    console.print(table)
