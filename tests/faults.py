"""Fault injection for the verifier: real mistakes, planted in real artifacts.

``build_artifacts(folder)`` trains one small model (simple_cnn telling ten colours apart, a few
seconds) and exports it as every artifact kind that can run here: ONNX, simplified ONNX, TorchScript,
INT8 ONNX and FP16 ONNX. ``FAULTS`` plants one mistake each into a copy:

  weight      one weight moved by more than the precision's noise: an element of the first
              convolution (int8: the classifier's bias of one class; see onnx_perturb_weight)
  rgb-bgr     the input's colour channels reversed inside the graph (ONNX: a Gather on the
              input; TorchScript: the first convolution's input channels swapped)
  mean-std    a wrong mean/std in the stored input spec (the graph is untouched)
  batch       the batch dimension baked (ONNX: declared as 1; TorchScript: a reshape traced
              at batch 2)
  layer       a layer removed (ONNX: the first Relu bypassed, or the first MaxPool where INT8
              folded the Relu away; TorchScript: the first BatchNorm made the identity)
  fp16-overflow  (fp16 only) the first Relu's input scaled by 2^15 and its output back: the
              same function in exact arithmetic, beyond 65504 in fp16
  int8-scales (int8 only) every weight scale x100

``build_yolo_artifacts`` and ``DETECT_FAULTS`` do the same for a detector: a YOLO11n trained by Ultralytics
on drawn shapes, as ONNX, FP16 and INT8 ONNX, with the mistakes detectors suffer (see the detection section).

``verify_cli`` runs ``cnnexport verify ARTIFACT --checkpoint CKPT --precision P --images HELDOUT``
in process; a fault is caught when it exits 1. Used by tests/test_fault_injection.py and
benchmarks/robustness.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METADATA_KEY = "cnnexport.spec"

# artifact kind -> (precision of its tolerance set, file suffix)
KINDS: dict[str, tuple[str, str]] = {
    "onnx": ("fp32", ".onnx"),
    "simplified": ("fp32", ".sim.onnx"),
    "torchscript": ("fp32", ".ts"),
    "int8": ("int8", ".int8.onnx"),
    "fp16": ("fp16", ".fp16.onnx"),
}


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inject: Callable[[Path, Path, str], None]  # (clean artifact, faulty copy, kind)
    kinds: tuple[str, ...] = tuple(KINDS)


# --------------------------------------------------------------------------- building the clean artifacts


# ten colours whose red and blue swap into another class of the ten (green-ish ones included)
PALETTE = np.array(
    [
        (1, 0, 0),
        (0, 0, 1),
        (1, 1, 0),
        (0, 1, 1),
        (1, 0.5, 0),
        (0, 0.5, 1),
        (1, 0, 0.5),
        (0.5, 0, 1),
        (0.5, 1, 0),
        (0, 1, 0.5),
    ],
    dtype=np.float32,
)
INPUT_SHAPE = (3, 16, 16)


def colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels in [0, 1] (N, 3, 16, 16) of ten noisy colours, and their class: a task where colour order matters."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(PALETTE), n)
    brightness = rng.uniform(0.6, 1.0, (n, 1, 1, 1)).astype(np.float32)
    pixels = PALETTE[labels][:, :, None, None] * brightness + rng.normal(0, 0.12, (n, *INPUT_SHAPE)).astype(np.float32)
    return np.clip(pixels, 0, 1).astype(np.float32), labels.astype(np.int64)


def build_artifacts(folder: Path, arch: str = "simple_cnn") -> tuple[Path, dict[str, Path], Path]:
    """(checkpoint, {kind: artifact}, held-out images .npy) in ``folder``; every artifact passed verification when built.

    The model is trained for a few seconds to tell ten colours apart, so its predictions are
    decisive and depend on the channel order (a random network's are neither, which hides
    faults from the INT8 rule, judged mainly on top-1 agreement).
    """
    import torch

    from exporter import architectures, export_artifact, load_checkpoint
    from exporter.build import build
    from exporter.demo import train
    from exporter.inputs import normalize
    from exporter.pipeline import VerifyOptions
    from exporter.targets.onnx.flow import simplify_artifact

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = architectures.get(arch).spec(len(PALETTE)).with_overrides(input_shape=INPUT_SHAPE)
    train_x, train_y = colour_images(640, seed=1)
    torch.manual_seed(0)
    model, _ = train(architectures.get(arch).build(num_classes=len(PALETTE)), normalize(train_x, spec), train_y, epochs=2)
    ckpt = folder / f"{arch}.pt"
    torch.save({"arch": arch, "input_shape": list(INPUT_SHAPE), "model_state_dict": model.state_dict()}, ckpt)
    loaded = load_checkpoint(ckpt)
    calib, heldout = folder / "calib.npy", folder / "heldout.npy"
    np.save(calib, normalize(colour_images(128, seed=2)[0], spec))
    np.save(heldout, normalize(colour_images(64, seed=3)[0], spec))
    opts = VerifyOptions(images=heldout)
    artifacts = {
        "onnx": export_artifact("onnx", loaded, folder / f"{arch}.onnx", {"exporter": "legacy"}, opts, write=False),
        "torchscript": export_artifact("torchscript", loaded, folder / f"{arch}.ts", {}, opts, write=False),
    }
    artifacts["simplified"] = simplify_artifact(artifacts["onnx"].path, folder / f"{arch}.sim.onnx", loaded, opts, write=False)
    source = artifacts["simplified"].path
    artifacts["int8"] = build(
        "int8",
        source,
        calibration={"data": str(calib), "samples": 96, "holdout": 32},
        output=folder / f"{arch}.int8.onnx",
        loaded=loaded,
        verify=opts,
        write=False,
    )[-1]
    artifacts["fp16"] = build(
        "fp16",
        source,
        calibration={"data": str(calib), "samples": 32, "holdout": 0},
        output=folder / f"{arch}.fp16.onnx",
        loaded=loaded,
        verify=opts,
        write=False,
    )[-1]
    for kind, result in artifacts.items():
        if result.verification.status != "pass":
            raise AssertionError(f"the clean {kind} artifact failed when built: {result.verification.reason}")
    return ckpt, {kind: result.path for kind, result in artifacts.items()}, heldout


# --------------------------------------------------------------------------- ONNX surgery


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def _save(model, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def _initializers(model) -> dict:
    return {i.name: i for i in model.graph.initializer}


def _producer(model) -> dict:
    return {out: node for node in model.graph.node for out in node.output}


def _first(model, op_type: str):
    node = next((n for n in model.graph.node if n.op_type == op_type), None)
    if node is None:
        raise LookupError(f"no {op_type} node in the graph")
    return node


def _weight_initializer(model, node):
    """The initializer behind a node's weight input, through DequantizeLinear / Cast."""
    inits, producers = _initializers(model), _producer(model)
    name = node.input[1]
    while name not in inits:
        producer = producers.get(name)
        if producer is None or producer.op_type not in ("DequantizeLinear", "Cast"):
            raise LookupError(f"weight {node.input[1]} is not backed by an initializer")
        name = producer.input[0]
    return inits[name]


def _replace(init, array: np.ndarray) -> None:
    from onnx import numpy_helper

    init.CopyFrom(numpy_helper.from_array(array.astype(numpy_helper.to_array(init).dtype), init.name))


def _rewire(model, old: str, new: str, skip=None) -> None:
    """Every consumer of tensor ``old`` (and the graph outputs) reads ``new`` instead."""
    for node in model.graph.node:
        if node is skip:
            continue
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
    for out in model.graph.output:
        if out.name == old:
            raise LookupError("cannot rewire a graph output")


def onnx_perturb_weight(src: Path, dst: Path, kind: str) -> None:
    from onnx import numpy_helper

    model = _load(src)
    if kind == "int8":
        # one int8 weight can move by at most 255 steps, which stays inside int8's own noise (the INT8 rule
        # allows 0.25 x range): the mistake that matters is the classifier's bias of one class moved by 10 logits
        gemm = _first(model, "Gemm")
        inits, producers = _initializers(model), _producer(model)
        dq = producers[gemm.input[2]]
        bias, scale = inits[dq.input[0]], float(numpy_helper.to_array(inits[dq.input[1]]).reshape(-1)[0])
        b = numpy_helper.to_array(bias).copy()
        b.reshape(-1)[0] += int(round(10.0 / scale))
        _replace(bias, b)
    else:  # a float weight of the first convolution moves by half of the tensor's largest magnitude (fp16: by twice)
        init = _weight_initializer(model, _first(model, "Conv"))
        w = numpy_helper.to_array(init).copy()
        w.reshape(-1)[0] += float(np.abs(w).max()) * (2.0 if kind == "fp16" else 0.5)
        _replace(init, w)
    _save(model, dst)


def onnx_swap_rgb(src: Path, dst: Path, kind: str) -> None:
    from onnx import helper, numpy_helper

    model = _load(src)
    graph_input = model.graph.input[0].name
    swapped = graph_input + "_bgr"
    _rewire(model, graph_input, swapped)
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_order"))
    model.graph.node.insert(0, helper.make_node("Gather", [graph_input, "bgr_order"], [swapped], axis=1, name="injected_bgr"))
    _save(model, dst)


def _wrong_spec(text: str) -> str:
    spec = json.loads(text)
    spec["mean"] = [0.5] * len(spec["mean"])
    spec["std"] = [0.5] * len(spec["std"])
    return json.dumps(spec, sort_keys=True)


def onnx_wrong_mean_std(src: Path, dst: Path, kind: str) -> None:
    model = _load(src)
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    prop.value = _wrong_spec(prop.value)
    _save(model, dst)


def onnx_bake_batch(src: Path, dst: Path, kind: str) -> None:
    model = _load(src)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    _save(model, dst)


def onnx_remove_layer(src: Path, dst: Path, kind: str) -> None:
    """Bypass the first Relu; an INT8 graph has none (onnxruntime folds Relu into the quantizer): the first MaxPool."""
    model = _load(src)
    ops = {n.op_type for n in model.graph.node}
    node = _first(model, "Relu" if "Relu" in ops else "MaxPool")
    _rewire(model, node.output[0], node.input[0], skip=node)
    model.graph.node.remove(node)
    _save(model, dst)


def onnx_fp16_overflow(src: Path, dst: Path, kind: str) -> None:
    """Relu(x) = Relu(x * 2^15) * 2^-15 exactly in real numbers; in fp16, x * 2^15 passes 65504."""
    from onnx import TensorProto, helper, numpy_helper

    model = _load(src)
    relu = _first(model, "Relu")
    dtype = np.float16 if _elem_type(model, relu.input[0]) == TensorProto.FLOAT16 else np.float32
    up, down = relu.input[0] + "_x32768", relu.output[0] + "_back"
    model.graph.initializer.extend(
        [numpy_helper.from_array(np.array(2.0**15, dtype), "k_up"), numpy_helper.from_array(np.array(2.0**-15, dtype), "k_down")]
    )
    _rewire(model, relu.output[0], down, skip=relu)
    index = list(model.graph.node).index(relu)
    model.graph.node.insert(index, helper.make_node("Mul", [relu.input[0], "k_up"], [up], name="injected_up"))
    relu.input[0] = up
    model.graph.node.insert(index + 2, helper.make_node("Mul", [relu.output[0], "k_down"], [down], name="injected_down"))
    _save(model, dst)


def _elem_type(model, tensor: str) -> int:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if value.name == tensor:
            return value.type.tensor_type.elem_type
    raise LookupError(f"no type for {tensor}")


def onnx_break_int8_scales(src: Path, dst: Path, kind: str) -> None:
    from onnx import numpy_helper

    model = _load(src)
    inits = _initializers(model)
    touched = set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and node.input[1] not in touched:
            scale = inits[node.input[1]]
            _replace(scale, numpy_helper.to_array(scale) * 100)
            touched.add(node.input[1])
    if not touched:
        raise LookupError("no quantized weights found")
    _save(model, dst)


# --------------------------------------------------------------------------- TorchScript surgery


def _ts_load(path: Path):
    import torch

    extra = {METADATA_KEY: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    spec = extra[METADATA_KEY]
    return module, spec.decode() if isinstance(spec, bytes) else spec


def _ts_save(module, spec: str, path: Path) -> None:
    import torch

    torch.jit.save(module, str(path), _extra_files={METADATA_KEY: spec})


def _first_param(module, predicate):
    for name, value in module.state_dict().items():
        if predicate(name, value):
            return name, value
    raise LookupError("no matching parameter")


def ts_perturb_weight(src: Path, dst: Path, kind: str) -> None:
    import torch

    module, spec = _ts_load(src)
    _, w = _first_param(module, lambda n, v: v.ndim == 4)
    with torch.no_grad():
        w.view(-1)[0] += w.abs().max() * 0.5
    _ts_save(module, spec, dst)


def ts_swap_rgb(src: Path, dst: Path, kind: str) -> None:
    import torch

    module, spec = _ts_load(src)
    _, w = _first_param(module, lambda n, v: v.ndim == 4 and v.shape[1] == 3)
    with torch.no_grad():
        w.copy_(w[:, [2, 1, 0]].clone())
    _ts_save(module, spec, dst)


def ts_wrong_mean_std(src: Path, dst: Path, kind: str) -> None:
    module, spec = _ts_load(src)
    _ts_save(module, _wrong_spec(spec), dst)


def ts_bake_batch(src: Path, dst: Path, kind: str) -> None:
    import warnings

    import torch

    module, spec = _ts_load(src)

    class Baked(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            y = self.inner(x)
            return y.reshape(int(y.shape[0]), -1)  # int(): the trace keeps the example's batch as a constant

    shape = json.loads(spec)
    example = torch.zeros(2, shape["channels"], shape["height"], shape["width"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(Baked(module), example, check_trace=False)
    _ts_save(traced, spec, dst)


def ts_remove_layer(src: Path, dst: Path, kind: str) -> None:
    """The first BatchNorm becomes the identity (mean 0, var 1 - eps, weight 1, bias 0)."""
    import torch

    module, spec = _ts_load(src)
    state = module.state_dict()
    prefix = next(n[: -len("running_var")] for n in state if n.endswith("running_var"))
    with torch.no_grad():
        state[prefix + "running_mean"].zero_()
        state[prefix + "running_var"].fill_(1.0 - 1e-5)
        state[prefix + "weight"].fill_(1.0)
        state[prefix + "bias"].zero_()
    _ts_save(module, spec, dst)


def _by_kind(onnx_fn, ts_fn):
    def inject(src: Path, dst: Path, kind: str) -> None:
        (ts_fn if kind == "torchscript" else onnx_fn)(src, dst, kind)

    return inject


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault("weight", "one weight of the first convolution moved", _by_kind(onnx_perturb_weight, ts_perturb_weight)),
        Fault("rgb-bgr", "input colour channels reversed inside the model", _by_kind(onnx_swap_rgb, ts_swap_rgb)),
        Fault("mean-std", "wrong mean/std in the stored input spec", _by_kind(onnx_wrong_mean_std, ts_wrong_mean_std)),
        Fault("batch", "batch dimension baked", _by_kind(onnx_bake_batch, ts_bake_batch)),
        Fault(
            "layer",
            "a layer removed (ONNX: first Relu bypassed; TorchScript: first BatchNorm made identity)",
            _by_kind(onnx_remove_layer, ts_remove_layer),
        ),
        Fault("fp16-overflow", "an activation beyond 65504 in fp16", onnx_fp16_overflow, ("fp16",)),
        Fault("int8-scales", "INT8 weight scales x100", onnx_break_int8_scales, ("int8",)),
    ]
}


def matrix() -> list[tuple[str, str]]:
    """Every (fault, kind) cell that applies."""
    return [(f.name, kind) for f in FAULTS.values() for kind in f.kinds]


def faulty_name(clean: Path, fault: str) -> str:
    precision_suffix = "".join(clean.suffixes)
    return clean.name[: -len(precision_suffix)] + f".{fault}" + precision_suffix


# --------------------------------------------------------------------------- verifying


@dataclass
class VerifyOutcome:
    exit_code: int
    reason: str
    stderr: str
    stdout: str = ""  # the --json report (tests.verdicts reads the verdict from it)


def verify_cli(artifact: Path, checkpoint: Path, kind: str, images: Path | None = None) -> VerifyOutcome:
    """`cnnexport verify ARTIFACT --checkpoint CKPT --precision P [--images HELDOUT] --json` in process."""
    from typer.testing import CliRunner

    from exporter.cli import app

    precision = KINDS[kind][0]
    args = ["verify", str(artifact), "--checkpoint", str(checkpoint), "--precision", precision, "--json"]
    r = CliRunner().invoke(app, args + (["--images", str(images)] if images else []))
    reason = ""
    try:
        reason = json.loads(r.stdout)["artifacts"][0]["verification"]["reason"]
    except (ValueError, KeyError, IndexError):
        reason = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    return VerifyOutcome(r.exit_code, reason, r.stderr, r.stdout)


# --------------------------------------------------------------------------- detection: a YOLO trained by Ultralytics
#
# ``build_yolo_artifacts(folder)`` draws the shapes data set (exporter/tasks/detect_shapes.py), trains a YOLO11n on
# it with Ultralytics (~40 s on 2 cores; needs the ultralytics extra) and exports it as ONNX, FP16 ONNX and INT8
# ONNX; every artifact is judged by matched boxes on the held-out images. ``DETECT_FAULTS`` plants one mistake each:
#
#   score-negated  one class's score channel turned around (score -> 1 - score) after the head
#   box-shifted    every box's y moved after the head: by 2 px (fp32, fp16), by 0.15 x the image size in INT8
#                  (the INT8 rule allows 0.1 x image size: a 2 px shift there is inside INT8's own noise)
#   rgb-bgr        the input's colour channels reversed inside the graph (a Gather on the input)
#   mean-std       a wrong mean/std in the stored input spec (the graph is untouched)
#   batch          the batch dimension declared as 1
#   int8-scales    (int8 only) every weight scale x100
#   int8-collapse  (int8 only) onnxruntime's quantize_static over the whole fp32 graph: boxes (0..128 px) and
#                  scores (0..1) share one output scale and every box is lost (what cnnexport's INT8 avoids by
#                  keeping the head's decoding in float)

YOLO_SIZE, YOLO_TRAIN, YOLO_HELDOUT, YOLO_EPOCHS = 128, 96, 32, 15
YOLO_SHIFT_PX = 2.0  # box-shifted in fp32 and fp16
YOLO_INT8_SHIFT = 0.15  # box-shifted in INT8, x the image size

# detection artifact kind -> (precision of its tolerance set, file suffix)
DETECT_KINDS: dict[str, tuple[str, str]] = {
    "onnx": ("fp32", ".onnx"),
    "fp16": ("fp16", ".fp16.onnx"),
    "int8": ("int8", ".int8.onnx"),
}


def build_yolo_artifacts(folder: Path) -> tuple[Path, dict[str, Path], Path]:
    """(best.pt, {kind: artifact}, held-out image folder) in ``folder``; every artifact passed verification when built."""
    from exporter.tasks.detect_shapes import train_yolo, write_dataset

    folder = Path(folder)
    data = write_dataset(folder / "shapes", train=YOLO_TRAIN, val=YOLO_HELDOUT, size=YOLO_SIZE)
    best = train_yolo(data, folder / "runs", epochs=YOLO_EPOCHS, size=YOLO_SIZE)
    return best, export_yolo_artifacts(best, data.parent, folder), data.parent / "images" / "val"


def export_yolo_artifacts(best: Path, shapes: Path, folder: Path) -> dict[str, Path]:
    """{kind: artifact} of an Ultralytics checkpoint, verified on ``shapes``/images/val; INT8 (from the ONNX, as
    `cnnexport quantize yolo.onnx` makes it) calibrated on its train images, FP16 from the simplified ONNX."""
    from exporter import export_artifact, load_checkpoint
    from exporter.build import build
    from exporter.pipeline import VerifyOptions
    from exporter.targets.onnx.flow import simplify_artifact

    folder = Path(folder)
    loaded = load_checkpoint(best)
    opts = VerifyOptions(images=Path(shapes) / "images" / "val")
    calib = str(Path(shapes) / "images" / "train")
    artifacts = {"onnx": export_artifact("onnx", loaded, folder / "yolo.onnx", {}, opts, write=False)}
    source = artifacts["onnx"].path
    artifacts["int8"] = build(
        "int8",
        source,
        calibration={"data": calib, "samples": YOLO_TRAIN - 32, "holdout": 32},
        output=folder / "yolo.int8.onnx",
        loaded=loaded,
        verify=opts,
        write=False,
    )[-1]
    simplified = simplify_artifact(source, folder / "yolo.sim.onnx", loaded, opts, write=False).path
    artifacts["fp16"] = build(
        "fp16",
        simplified,
        calibration={"data": calib, "samples": 32, "holdout": 0},
        output=folder / "yolo.fp16.onnx",
        loaded=loaded,
        verify=opts,
        write=False,
    )[-1]
    for kind, result in artifacts.items():
        if result.verification.status != "pass":
            raise AssertionError(f"the clean YOLO {kind} artifact failed when built: {result.verification.reason}")
    return {kind: result.path for kind, result in artifacts.items()}


def _spec_of(model) -> dict:
    return json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))


def onnx_edit_detections(src: Path, dst: Path, scale: np.ndarray, shift: np.ndarray) -> None:
    """The detect output (N, 4 + classes, anchors) multiplied by ``scale`` and shifted by ``shift`` (each (4 + classes,))."""
    from onnx import TensorProto, helper, numpy_helper

    model = _load(src)
    out = model.graph.output[0].name
    dtype = np.float16 if model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16 else np.float32
    raw = out + "_before_fault"
    for node in model.graph.node:
        node.output[:] = [raw if name == out else name for name in node.output]
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(scale.reshape(1, -1, 1).astype(dtype), "fault_scale"),
            numpy_helper.from_array(shift.reshape(1, -1, 1).astype(dtype), "fault_shift"),
        ]
    )
    model.graph.node.extend(
        [
            helper.make_node("Mul", [raw, "fault_scale"], ["fault_scaled"], name="injected_scale"),
            helper.make_node("Add", ["fault_scaled", "fault_shift"], [out], name="injected_shift"),
        ]
    )
    _save(model, dst)


def _channels(model) -> int:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 3 or not dims[1].dim_value:
        raise LookupError("the first output is not a (N, 4 + classes, anchors) detect output")
    return dims[1].dim_value


def detect_negate_score(src: Path, dst: Path, kind: str) -> None:
    """The second class's scores become 1 - score: background anchors score ~1 and its objects ~0."""
    channels = _channels(_load(src))
    scale, shift = np.ones(channels), np.zeros(channels)
    scale[5], shift[5] = -1.0, 1.0
    onnx_edit_detections(src, dst, scale, shift)


def detect_shift_box(src: Path, dst: Path, kind: str) -> None:
    """Every box's centre y moved down: 2 px, or 0.15 x the image size in INT8 (whose rule allows 0.1 x)."""
    model = _load(src)
    channels = _channels(model)
    shift = np.zeros(channels)
    shift[1] = YOLO_INT8_SHIFT * _spec_of(model)["height"] if kind == "int8" else YOLO_SHIFT_PX
    onnx_edit_detections(src, dst, np.ones(channels), shift)


def detect_int8_collapse(src: Path, dst: Path, kind: str) -> None:
    """onnxruntime's quantize_static over the whole fp32 graph beside ``src`` (built by export_yolo_artifacts),
    calibrated on the same training images: one shared scale for boxes and scores."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    from exporter.inputs import OrtCalibrationReader, image_source
    from exporter.spec import ModelSpec

    fp32 = Path(src).with_name(Path(src).name.removesuffix(DETECT_KINDS["int8"][1]) + DETECT_KINDS["onnx"][1])
    spec = ModelSpec.from_dict(_spec_of(_load(fp32)))
    calib = image_source(fp32.parent / "shapes" / "images" / "train", spec)
    quantize_static(str(fp32), str(dst), OrtCalibrationReader(calib, "input", batch_size=8), quant_format=QuantFormat.QDQ)


DETECT_FAULTS: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault("score-negated", "one class's score channel turned around (1 - score)", detect_negate_score, tuple(DETECT_KINDS)),
        Fault("box-shifted", "every box moved down (2 px; INT8: 0.15 x image size)", detect_shift_box, tuple(DETECT_KINDS)),
        Fault("rgb-bgr", "input colour channels reversed inside the model", onnx_swap_rgb, tuple(DETECT_KINDS)),
        Fault("mean-std", "wrong mean/std in the stored input spec", onnx_wrong_mean_std, tuple(DETECT_KINDS)),
        Fault("batch", "batch dimension baked", onnx_bake_batch, tuple(DETECT_KINDS)),
        Fault("int8-scales", "INT8 weight scales x100", onnx_break_int8_scales, ("int8",)),
        Fault(
            "int8-collapse",
            "the whole graph quantized by quantize_static (boxes and scores share a scale)",
            detect_int8_collapse,
            ("int8",),
        ),
    ]
}


def detect_matrix() -> list[tuple[str, str]]:
    """Every (fault, kind) cell of the detection matrix."""
    return [(f.name, kind) for f in DETECT_FAULTS.values() for kind in f.kinds]
