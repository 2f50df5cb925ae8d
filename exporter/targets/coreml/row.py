"""The coreml row of the stage table: an ML program converted from the checkpoint's model."""

from __future__ import annotations

from typing import Literal, Optional

from exporter import rows
from exporter.options import Strict, opt

ORDER = 30


class CoreMLOptions(Strict):
    precision: Literal["fp16", "fp32"] = opt("fp16", "Compute precision of the ML program.")
    image_input: bool = opt(False, "Take an image (0..255 pixels) and fold the normalization into the model.")
    classifier: bool = opt(False, "Classifier outputs: classLabel and classLabel_probs (softmax), labels from --labels.")
    batch: str = opt("1:64", "Batch range MIN:MAX, or N for a fixed batch.")
    min_target: Optional[str] = opt(
        None, "Minimum deployment target: iOS15..iOS18, macOS12..macOS15 (default iOS15; iOS16 with --compress)."
    )
    compress: Optional[str] = opt(None, "Weight compression: palettize:N (N bits, k-means LUT) or linear8 (int8 per channel).")
    author: Optional[str] = opt(None, "Model metadata: author.")
    license: Optional[str] = opt(None, "Model metadata: license.")
    version: Optional[str] = opt(None, "Model metadata: version string.")
    description: Optional[str] = opt(None, "Model metadata: short description.")


def pass_rule(options: CoreMLOptions) -> str:
    """A weight-compressed program is judged by the int8 rule, others by their compute precision."""
    return "int8" if options.compress else options.precision


FORMAT = rows.Format("coreml", "exporter.targets.coreml.runner:open_artifact", (".mlpackage",), describe=".mlpackage")

ROWS = [
    rows.ArtifactKind(
        name="coreml",
        kind="coreml",
        verb="coreml",
        suffix=".mlpackage",
        source="checkpoint",
        options=CoreMLOptions,
        stage="exporter.targets.coreml.stage:make",
        build="exporter.build:from_checkpoint",
        format=FORMAT,
        precision=pass_rule,
        traces=True,
        folder=True,
        bench=None,
        verify_batches="exporter.targets.coreml.stage:verify_batches",
        check="exporter.targets.coreml.stage:check_options",
        packages=("coremltools",),
        help="Convert to a Core ML ML program (.mlpackage); verify it on Linux with the MIL interpreter.\n\n"
        "Tolerances: fp32/fp16 programs use the fp32/fp16 pass rule, a compressed program the int8 rule. "
        "Verification batch sizes are clipped into --batch.",
        flag_help={"checkpoint": "Checkpoint to convert.", "output": "Output .mlpackage (default: beside the checkpoint)."},
    )
]
