"""Core ML `.mlpackage` on Linux: the MIL program executed by cnnexport's NumPy interpreter.

Same contract as every runner: ``infer`` takes the *normalized* float32 NCHW batch the
reference takes. For a package with an image input the runner turns it back into pixels
(0..255, in the spec's RGB/gray order), lays the channels out the way Core ML would hand an
image of the package's declared colour space to the program (BGR packages get B,G,R), and
lets the program's own scale/bias do the normalization. A package whose colour layout, scale
or bias does not match the spec therefore computes different numbers and fails verification.

A batch larger than the package's maximum is run in chunks (as a caller of Core ML would);
one smaller than its minimum is an error.

Classifier packages return ``{probabilities name: (N, classes) float32, label name: labels}``;
when the package records that its probabilities are the softmax of the logits
(``cnnexport.classifier_output`` = ``softmax``), ``reference_transform`` tells verification to
compare them with the softmax of the reference's logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporter.errors import BadInputError
from exporter.runners.base import Runner
from exporter.spec import METADATA_KEY

COLOR_SPACES = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}


class MilRunner(Runner):
    name = "mil-interpreter"

    def __init__(self, path: Path):
        from exporter.errors import UnsupportedOp
        from exporter.targets.coreml.mil.package import MLPackage
        from exporter.targets.coreml.mil.program import Program

        super().__init__()
        self.path = Path(path)
        self.package = MLPackage(self.path)
        # An op the interpreter lacks does not stop the runner from opening (its metadata and
        # declaration are still checked); verification reports it as skipped, never pass.
        self.unsupported_op: UnsupportedOp | None = None
        self.program: Program | None
        try:
            self.program = Program(self.package)
        except UnsupportedOp as exc:
            self.program, self.unsupported_op = None, exc
        description = self.package.spec.description
        if len(description.input) != 1:
            raise BadInputError(f"{path} has {len(description.input)} inputs; cnnexport verifies single-input image models")
        feature = description.input[0]
        self.input_name = feature.name
        self.input_kind = feature.type.WhichOneof("Type")
        self.color_space = COLOR_SPACES.get(feature.type.imageType.colorSpace) if self.input_kind == "imageType" else None
        meta = self.package.user_metadata
        self.metadata = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}
        # The rule the package was exported under: its compute precision, or int8 when its weights are
        # compressed; None for a package that does not say (judged by the precision verification is given).
        self.precision = "int8" if meta.get("cnnexport.compression") else meta.get("cnnexport.precision")
        self.reference_transform = meta.get("cnnexport.classifier_output") if description.predictedProbabilitiesName else None
        self.batch_range = self._batch_range(feature)
        # `cnnexport coreml --batch N` fixes the batch on request; verification accepts that size.
        requested = meta.get("cnnexport.batch", "")
        low, _, high = requested.partition(":")
        self.requested_fixed_batch = int(low) if low.isdigit() and low == high else None
        self.batch_dim = self._declared_batch()
        self.probabilities_name = description.predictedProbabilitiesName or None
        self.label_name = description.predictedFeatureName or None
        self.output_names = [o.name for o in description.output]

    def _declared_batch(self):
        """The MIL function input's first dimension: "batch" when unknown (flexible), else its size."""
        program = self.package.spec.mlProgram.functions["main"]
        for named in program.inputs:
            if named.name == self.input_name:
                dims = named.type.tensorType.dimensions
                if not dims or dims[0].WhichOneof("dimension") != "constant":
                    return "batch"
                return int(dims[0].constant.size)
        raise BadInputError(f"{self.path}: the MIL program has no input named {self.input_name}")

    @staticmethod
    def _batch_range(feature) -> tuple[int, int | None] | None:
        """(min, max) of the batch dimension the model description allows; max None = unbounded."""
        if feature.type.WhichOneof("Type") != "multiArrayType":
            return None
        array = feature.type.multiArrayType
        if array.WhichOneof("ShapeFlexibility") == "shapeRange" and array.shapeRange.sizeRanges:
            r = array.shapeRange.sizeRanges[0]
            return int(r.lowerBound), (None if r.upperBound < 0 else int(r.upperBound))
        if array.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
            sizes = [int(s.shape[0]) for s in array.enumeratedShapes.shapes]
            return min(sizes), max(sizes)
        return (int(array.shape[0]), int(array.shape[0])) if array.shape else None

    def _pixels(self, batch: np.ndarray) -> np.ndarray:
        """Normalized NCHW -> what Core ML hands the program for an image of this colour space."""
        if not self.metadata:
            raise BadInputError(f"{self.path} has an image input but no cnnexport spec to undo the normalization with")
        from exporter.spec import ModelSpec

        spec = ModelSpec.from_dict(self.metadata)
        mean = np.asarray(spec.channel_mean(), np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(spec.channel_std(), np.float32).reshape(1, -1, 1, 1)
        pixels = (batch * std + mean) * np.float32(255.0)
        if self.color_space == "BGR":
            if pixels.shape[1] != 3:
                raise BadInputError("a BGR image input needs 3 channels")
            pixels = pixels[:, ::-1]
        return np.ascontiguousarray(pixels, dtype=np.float32)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.unsupported_op is not None:
            raise self.unsupported_op
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch_range is not None:
            low, high = self.batch_range
            if high is not None and batch.shape[0] > high:
                # A caller feeds Core ML at most MAX samples per prediction: run nearly equal chunks.
                chunks = np.array_split(batch, -(-batch.shape[0] // high))
                parts = [self.infer(chunk) for chunk in chunks]
                return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
            if batch.shape[0] < low:
                raise BadInputError(f"batch {batch.shape[0]} is outside the package's batch range {low}..{high}")
        feed = self._pixels(batch) if self.input_kind == "imageType" else batch
        assert self.program is not None  # loaded unless unsupported_op says why not (or closed)
        results = self.program.run({self.input_name: feed})
        if self.probabilities_name:
            labels, probs = self._classifier_outputs(results)
            return {self.probabilities_name: probs, self.label_name: labels}
        return {name: np.asarray(value, dtype=np.float32) for name, value in results.items()}

    def close(self) -> None:
        self.program = None

    def _classifier_outputs(self, results: dict):
        label, probs = None, None
        for value in results.values():
            arr = np.asarray(value)
            if arr.dtype == object:
                label = arr
            else:
                probs = arr.astype(np.float32)
        if probs is None or label is None:
            raise BadInputError(f"{self.path} is a classifier but its program does not produce labels and probabilities")
        return label, probs
