"""`cnnexport inspect ARTIFACT`: what an artifact's runtime reads from it (a checkpoint is inspected by cli/check.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.markup import escape

from exporter.cli.ui import Ui


def inspect_artifact(ui: Ui, path: Path, json_out: bool) -> bool:
    """An artifact given to `inspect` (a .onnx, .pte, .tflite, ...): what its runner reads from it; False for a checkpoint."""
    from exporter.kinds import formats

    fmt = next((f for f in formats() if any(path.name.endswith(s) for s in f.suffixes)), None)
    if fmt is None:
        return False
    from exporter.fsutil import size_of
    from exporter.runners import open_runner

    with open_runner(path, fmt.name) as runner:
        spec = runner.metadata or {}
        info = {
            "artifact": str(path),
            "kind": fmt.name,
            "runner": runner.name,
            "bytes": size_of(path),
            "input": runner.input_name,
            "outputs": list(runner.output_names),
            "batch": runner.batch_dim,
            "batch_range": list(runner.batch_range) if runner.batch_range else None,
            "precision": runner.precision,
            "spec": spec or None,
        }
    if json_out:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
        return True
    from rich.table import Table

    table = Table(show_header=False, title=str(path), title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("kind", f"{fmt.name}  [dim](run by {escape(runner.name)})[/dim]")
    table.add_row("size on disk", f"{info['bytes'] / 1e6:.2f} MB")
    shape = "x".join(str(spec[k]) for k in ("channels", "height", "width") if k in spec)
    table.add_row("input", escape(runner.input_name) + (f" (N x {shape})" if shape else ""))
    table.add_row("outputs", escape(", ".join(runner.output_names)))
    if runner.batch_range:
        low, high = runner.batch_range
        table.add_row("batch", f"{low} to {'any' if high is None else high}")
    elif runner.batch_dim is not None:
        table.add_row("batch", escape(str(runner.batch_dim)))
    table.add_row("precision", escape(runner.precision or "fp32 (or not declared)"))
    if spec:
        table.add_row("architecture", escape(str(spec.get("arch"))))
        table.add_row("classes", str(spec.get("num_classes")))
    else:
        table.add_row("spec", "[dim]none: not written by cnnexport (give --input-shape, --mean, --std to verify it)[/dim]")
    ui.out.print(table)
    ui.progress(f"an artifact, not a checkpoint: `cnnexport verify {path} --checkpoint CKPT` checks it against PyTorch")
    return True
