"""Core ML `.mlpackage` through coremltools' own ``predict`` (macOS only).

On Linux `open_runner` uses the MIL interpreter (exporter/targets/coreml/mil_runner.py) instead; this runner
shares its input handling (normalized batch -> image pixels for image inputs) and output
contract, so the same verification applies on both systems.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from exporter.errors import BackendUnavailable, BadInputError
from exporter.targets.coreml.mil_runner import MilRunner


class CoreMLRunner(MilRunner):
    name = "coreml-predict"

    def __init__(self, path: Path):
        if platform.system() != "Darwin":
            raise BackendUnavailable("Core ML predict runs only on macOS; on Linux cnnexport verifies with its MIL interpreter")
        super().__init__(path)
        import coremltools as ct

        try:
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        except Exception as exc:  # noqa: BLE001 - Core ML raises its own errors
            raise BadInputError(f"{path} cannot be loaded by Core ML ({str(exc).splitlines()[0][:300]})") from None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        from PIL import Image

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.input_kind == "imageType":
            pixels = self._pixels(batch)
            if self.color_space == "BGR":
                pixels = pixels[:, ::-1]  # PIL images are RGB; Core ML reorders them itself
            images = [
                Image.fromarray(
                    np.clip(p.transpose(1, 2, 0).squeeze(-1) if p.shape[0] == 1 else p.transpose(1, 2, 0), 0, 255)
                    .round()
                    .astype(np.uint8)
                )
                for p in pixels
            ]
            outs = [self.model.predict({self.input_name: img}) for img in images]
        else:
            outs = [self.model.predict({self.input_name: batch})]
        if self.probabilities_name:
            labels = self.metadata.get("labels") or None
            rows = []
            for out in outs:
                probs = out[self.probabilities_name]
                keys = labels or sorted(probs, key=lambda k: int(k) if str(k).isdigit() else k)
                rows.append([probs[k] for k in keys])
            return {
                self.probabilities_name: np.asarray(rows, np.float32),
                self.label_name: np.asarray([o[self.label_name] for o in outs], dtype=object),
            }
        names = [n for n in self.output_names if n in outs[0]]
        return {
            n: np.concatenate([np.asarray(o[n], np.float32).reshape(-1, *np.asarray(o[n]).shape[1:]) for o in outs])
            for n in names
        }

    def close(self) -> None:
        super().close()
        self.model = None


def open_artifact(path: Path, threads: int | None = None, device: str = "cpu"):
    """Core ML's own runtime on macOS; elsewhere the MIL interpreter (exporter/targets/coreml/mil_runner.py)."""
    if platform.system() == "Darwin":
        return CoreMLRunner(path)
    return MilRunner(path)
