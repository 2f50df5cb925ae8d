"""Ultralytics YOLO checkpoints (``best.pt`` / ``last.pt``), read without running code from the file.

An Ultralytics checkpoint is a training dict holding a whole pickled model (``model`` or ``ema``,
usually float16) plus ``train_args``. Unpickling a model normally means trusting the file; here
the file is read with ``torch.load(weights_only=True)`` and an allowlist of exactly the module
classes it names that are ``torch.nn`` or ``ultralytics.nn`` modules: any other global (a hostile
``os.system``, a foreign class) is refused before anything is unpickled, as for any checkpoint.

What the reference model becomes: the export-mode head Ultralytics' own ONNX export uses (one
output, (N, 4 + classes, anchors) of xywh pixel boxes and sigmoid scores, or (N, max_det, 6)
for end-to-end heads), anchors recomputed per call so the batch axis stays dynamic; input RGB in
0..1 at the training image size (``train_args.imgsz``); the class names of ``model.names``.
Ultralytics is AGPL-3.0: an optional extra, imported only here, never vendored.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

from exporter.errors import BackendUnavailable, CheckpointError, first_line
from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints
from exporter.sources import Source

INSTALL = "pip install 'cnnexport[ultralytics]' (Ultralytics is AGPL-3.0; cnnexport only imports it)"
PACKAGE = "ultralytics."
ALLOWED_PREFIXES = ("ultralytics.nn.", "torch.nn.modules.")
# Task models whose heads cnnexport exports and verifies; the others are refused in one sentence.
SUPPORTED = {"DetectionModel": "detect", "ClassificationModel": "classify"}
OUTPUT_NAME = "detections"


def recognises(found: CheckpointFile) -> bool:
    """Its pickle names Ultralytics classes (read from the opcodes: nothing is unpickled to tell)."""
    return any(name.startswith(PACKAGE) for name in found.unsafe_globals)


def require_ultralytics(path: Path) -> None:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        raise BackendUnavailable(
            f"{path} is an Ultralytics YOLO checkpoint and Ultralytics is not installed: {INSTALL}"
        ) from None


def refuse_foreign_globals(path: Path, unsafe_globals: list[str]) -> None:
    """Anything but torch.nn / ultralytics.nn classes is refused before Ultralytics is even imported."""
    others = [name for name in unsafe_globals if not name.startswith(ALLOWED_PREFIXES)]
    if others:
        raise CheckpointError(
            f"{path} looks like an Ultralytics checkpoint but also names {', '.join(sorted(others)[:4])}, which is not a "
            "torch.nn or ultralytics.nn module; refused without unpickling anything (a hostile file can run code)"
        )


def restore_pil_open() -> None:
    """Undo Ultralytics' import-time patch of PIL's Image.open: on an unreadable image it pip-installs pi-heif.

    cnnexport never installs anything at run time, and a corrupt calibration image must stay a clear
    error (exit 2), not a ModuleNotFoundError from a plug-in nobody asked for.
    """
    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is not original:
        Image.open = original


def allowed_classes(path: Path, unsafe_globals: list[str]) -> list:
    """The torch.nn / ultralytics.nn module classes the file names, imported (each must be a network module)."""
    from torch import nn

    classes = []
    for name in unsafe_globals:
        module_name, _, attribute = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise CheckpointError(
                f"{path} names {name}, which this Ultralytics version does not have ({first_line(exc)}); "
                "install the Ultralytics version that wrote it (its 'version' key)"
            ) from None
        if not (isinstance(found, type) and issubclass(found, nn.Module)):
            raise CheckpointError(f"{path} names {name}, which is not a network module; refused without unpickling anything")
        classes.append(found)
    return classes


def read(found: CheckpointFile) -> RawCheckpoint:
    """The RawCheckpoint of an Ultralytics checkpoint: its model in export mode, with spec hints."""
    from exporter.loading.safe_pickle import safe_globals

    path, unsafe_globals, weights = found.path, found.unsafe_globals, found.weights
    refuse_foreign_globals(path, unsafe_globals)
    require_ultralytics(path)
    try:
        classes = allowed_classes(path, unsafe_globals)
    finally:
        restore_pil_open()
    try:
        with torch.serialization.safe_globals([*safe_globals(), *classes]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # the restricted unpickler's refusals and damaged files
        raise CheckpointError(f"{path} cannot be read as an Ultralytics checkpoint: {first_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} names Ultralytics classes but holds a {type(obj).__name__}, not a training dict")
    key = "ema" if weights == "ema" else "model"
    model = obj.get(key)
    if model is None and key == "model":  # a checkpoint saved mid-training keeps its weights under ema only
        model = obj.get("ema")
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"{path} is an Ultralytics checkpoint without {key!r} weights (keys: {', '.join(map(str, obj))})")
    kind = type(model).__name__
    if kind not in SUPPORTED:
        raise CheckpointError(
            f"{path} is an Ultralytics {kind}; cnnexport exports and verifies Ultralytics detect (DetectionModel) and "
            "classify (ClassificationModel) checkpoints, not segment, pose or OBB heads yet"
        )
    notes = []
    head = _export_mode(model)
    args = obj.get("train_args") or {}
    size = _image_size(args.get("imgsz"))
    names = getattr(model, "names", None) or {}
    labels = [str(names[i]) for i in sorted(names)] if isinstance(names, dict) and names else None
    yaml_name = Path(str((getattr(model, "yaml", None) or {}).get("yaml_file", "") or kind)).stem
    spec: dict = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    if kind == "DetectionModel":
        spec["resize"] = "letterbox"  # as Ultralytics' predict prepares images
    if size is not None:
        spec["input_shape"] = (int((getattr(model, "yaml", None) or {}).get("channels", 3)), size, size)
    else:
        notes.append("the checkpoint records no training image size (train_args.imgsz): pass --input-shape 3,H,W")
    if labels:
        spec["labels"] = labels
    task = SUPPORTED[kind]
    module = model if task == "classify" else NamedDetections(model)
    if task == "detect":
        layout = (
            "end-to-end (N, max_det, 6): x1, y1, x2, y2, score, class"
            if getattr(head, "end2end", False)
            else "(N, 4 + classes, anchors): xywh pixels, then sigmoid scores"
        )
        notes.append(f"Ultralytics detect head in export mode: {layout}")
    version = obj.get("version")
    return RawCheckpoint(
        form=f"ultralytics[{key}]",
        module=module,
        notes=notes,
        hints=Hints(names=[(yaml_name, "Ultralytics checkpoint")], spec=spec, tasks={"*": task}),
        weights=key,
        written_by=f"Ultralytics {version}" if version else "Ultralytics",
    )


def _export_mode(model):
    """Put the head in the mode Ultralytics' own ONNX export uses (its default nms=False: an end-to-end head
    keeps its one-to-one branch); anchors recomputed per call (dynamic batch)."""
    from ultralytics.nn.modules.head import Classify, Detect

    found = None
    for m in model.modules():
        if isinstance(m, Detect):
            m.dynamic, m.export, m.format, m.shape, m.xyxy = True, True, "onnx", None, False
            if getattr(m, "one2one_cv2", None) is not None:
                m.end2end = True  # an NMS-free head (YOLO26, YOLOv10) exports its top-k rows, as Ultralytics' ONNX
            found = m
        elif isinstance(m, Classify):
            m.export, m.format = True, "onnx"
    return found


def _image_size(imgsz) -> int | None:
    if isinstance(imgsz, int):
        return imgsz
    if isinstance(imgsz, (list, tuple)) and imgsz and len(set(imgsz)) == 1:
        return int(imgsz[0])
    return None


class NamedDetections(torch.nn.Module):
    """The YOLO model with its one output named ``detections`` (a lone tensor would be called logits)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return {OUTPUT_NAME: self.model(x)}


PICKLE = Source(
    name="ultralytics",
    stage="pickle",
    recognises=recognises,
    read=read,
    reads="Ultralytics YOLO training checkpoints (best.pt, last.pt): detect and classify models",
)
