"""The executorch rows of the stage table: fp32 (its --precision picks int8 too) and int8, one recipe stage each.

Two rows so that one recipe makes both programs (stages.executorch and stages.executorch_int8),
as the ONNX rows int8 and fp16 do; the verb is made from the first row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal, Optional

from exporter import rows
from exporter.options import Int8Rescue, Names, Strict, opt
from exporter.targets import calibrates_when_int8, options_precision

ORDER = 60  # after the desktop and server targets


class ExecuTorchSettings(Strict):
    backend: Literal["xnnpack", "portable"] = opt(
        "xnnpack", "xnnpack (ops XNNPACK supports run in its delegate, the rest in portable kernels) or portable only."
    )
    batch: str = opt("1:8:32", "Dynamic batch axis MIN:OPT:MAX (memory is planned for MAX; OPT is the export example).")
    static_batch: Optional[int] = opt(None, "Fix the batch size to N instead of --batch.", ge=1)
    per_channel: bool = opt(True, "int8: per-channel weight scales (else one per tensor).", flag="--per-channel/--per-tensor")
    observer: Literal["histogram", "minmax"] = opt(
        "histogram", "int8: how activation ranges are observed on the calibration samples (XNNPACKQuantizer's: histogram)."
    )
    exclude: Annotated[list[str], Names] = opt(
        [], "int8: module name (features.3.block.0) or module type (Linear) left unquantized, in float (repeatable)."
    )
    equalize: bool = opt(
        False,
        "int8: cross-layer equalization of the model's Conv(-BatchNorm)-ReLU-Conv pairs before quantizing "
        "(as `quantize --equalize`); the fp32 function is checked unchanged first.",
    )


class ExecuTorchBuild(Int8Rescue, ExecuTorchSettings):
    """The program's settings, then the int8 rescue's."""


class ExecuTorchOptions(ExecuTorchBuild):
    precision: Literal["fp32", "int8"] = opt(
        "fp32", "fp32, or int8 (pt2e static quantization with XNNPACKQuantizer, needs --calib; judged by the int8 rule)."
    )


class ExecuTorchInt8Options(ExecuTorchBuild):
    """The executorch_int8 recipe stage: always int8."""

    @property
    def precision(self) -> str:
        return "int8"


FORMAT = rows.Format(
    "executorch",
    "exporter.targets.executorch.runner:open_artifact",
    (".pte",),
    describe=".pte",
)

ROW = rows.ArtifactKind(
    name="executorch",
    kind="executorch",
    verb="executorch",
    suffix=".pte",
    source="checkpoint",
    options=ExecuTorchOptions,
    stage="exporter.targets.executorch.stage:make",
    build="exporter.rescue.flow:build_from_checkpoint",
    format=FORMAT,
    precision=options_precision,
    calibrates=calibrates_when_int8,
    reads_data=True,
    traces=True,
    check="exporter.targets.executorch.stage:check_options",
    verify_batches="exporter.targets.executorch.stage:verify_batches",
    suffixes={"int8": ".int8.pte"},
    rescue="exporter.targets.executorch.rescue:target",
    packages=("executorch", "torchao"),
    help="ExecuTorch program (.pte) for Android / embedded, XNNPACK on CPU; verified by ExecuTorch's runtime.",
)
INT8_ROW = replace(
    ROW,
    name="executorch_int8",
    kind="executorch-int8",
    suffix=".int8.pte",
    options=ExecuTorchInt8Options,
    suffixes={},
    help="",
)
ROWS = [ROW, INT8_ROW]
