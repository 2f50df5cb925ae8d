"""The torchscript row of the stage table: trace (default) or script a checkpoint's model."""

from __future__ import annotations

from exporter import rows
from exporter.options import Strict, opt
from exporter.targets import fixed_precision

ORDER = 10  # where its rows stand in the table: recipe sections, verbs and reports follow this order


class TorchScriptOptions(Strict):
    script: bool = opt(False, "Use torch.jit.script instead of tracing.")


FORMAT = rows.Format(
    "torchscript",
    "exporter.targets.torchscript.runner:open_artifact",
    detect="exporter.targets.torchscript.runner:is_torchscript",
    globs=("*.ts",),
    bench_devices=("cpu", "cuda"),
    describe="TorchScript",
    runtime="torch",
)

ROWS = [
    rows.ArtifactKind(
        name="torchscript",
        kind="torchscript",
        verb="torchscript",
        suffix=".ts",
        source="checkpoint",
        options=TorchScriptOptions,
        stage="exporter.targets.torchscript.stage:make",
        build="exporter.build:from_checkpoint",
        format=FORMAT,
        precision=fixed_precision("fp32"),
        traces=True,
        help="Export TorchScript (trace by default), then verify it against the checkpoint.",
        packages=(),
    )
]
