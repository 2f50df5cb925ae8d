"""Our ONNX artifacts read by real consumers beyond our own runners: OpenCV's DNN module and OpenVINO.

Each artifact kind (fp32, simplified, fp16, INT8 for CPU, INT8 for TensorRT) of a small RGB model
with calibrated BatchNorm, built through the CLI and calibrated on photo crops, is loaded by the
consumer, run at batch 1 and 4, and compared with PyTorch under the artifact's own pass rule.
OpenVINO is pinned to f32 inference precision: on AMX/AVX-512-BF16 CPUs it would otherwise compute
an "fp32" model in bf16. Tests skip with the reason where the consumer is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import build_model

KINDS = {  # artifact -> (file, precision rule)
    "onnx": ("m.onnx", "fp32"),
    "simplify": ("m.sim.onnx", "fp32"),
    "fp16": ("m.fp16.onnx", "fp16"),
    "int8-cpu": ("m.int8.onnx", "int8"),
    "int8-tensorrt": ("m.int8-trt.onnx", "int8"),
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Every ONNX kind of one model, the reference model and real inputs (photo crops)."""
    import torch
    from typer.testing import CliRunner

    from benchmarks.quantize import photo_crops
    from exporter.cli import app

    folder = tmp_path_factory.mktemp("consumers")
    model = build_model("simple_cnn")
    torch.save(model.state_dict(), folder / "m.pt")
    data = photo_crops(96, size=32)
    np.save(folder / "calib.npy", data)
    runner = CliRunner()

    def cli(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.stdout + result.stderr
        return result

    cli("onnx", folder / "m.pt", "--arch", "simple_cnn", "-o", folder / "m.onnx", "-q")
    cli("simplify", folder / "m.onnx", "-o", folder / "m.sim.onnx", "--checkpoint", folder / "m.pt", "--arch", "simple_cnn", "-q")
    common = (
        "--checkpoint", folder / "m.pt", "--arch", "simple_cnn", "--calib", folder / "calib.npy", "--samples", "64",
        "--holdout", "32", "-q",
    )  # fmt: skip
    cli("quantize", folder / "m.sim.onnx", "--precision", "fp16", "-o", folder / "m.fp16.onnx", *common)
    cli("quantize", folder / "m.sim.onnx", "--precision", "int8", "-o", folder / "m.int8.onnx", *common)
    cli(
        "quantize", folder / "m.sim.onnx", "--precision", "int8", "--target", "tensorrt",
        "-o", folder / "m.int8-trt.onnx", *common,
    )  # fmt: skip
    return folder, model.eval(), data


def _judge(reference: np.ndarray, out: np.ndarray, precision: str) -> dict:
    from exporter.verify import compare_arrays, tolerance_for

    metrics = compare_arrays(reference, out, tolerance_for(precision))
    assert metrics["status"] == "pass", metrics
    return metrics


def _reference(model, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize("kind", list(KINDS))
def test_openvino_reads_and_computes_every_onnx_kind(artifacts, kind):
    ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")
    folder, model, data = artifacts
    name, precision = KINDS[kind]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(folder / name)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    for batch_size in (1, 4):  # the dynamic batch axis, read by OpenVINO
        batch = np.ascontiguousarray(data[:batch_size])
        out = compiled(batch)[compiled.output(0)]
        _judge(_reference(model, batch), np.asarray(out), precision)


# What OpenCV's DNN module does not take (README, "Backends"): the fp16 graph's first Conv fails to
# parse (4.14 and 5.0: "inputs.size() != 0" / "!inputs.empty()"; 5.1 reads it and then refuses it
# when given an input: "cannot be loaded by the DNN engine"), and the uint8-activation QDQ model
# is refused by 5.0 while it reads the model ("bufidx >= 0"; measured, not at forward) and computed wrongly
# by 4.14 (cosine 0.04 vs PyTorch).
OPENCV_REFUSES = ("fp16", "int8-cpu")
# where OpenCV 5 refuses each (the step, and the words of its cv2.error); 4.x computes int8 wrongly instead
OPENCV_REFUSAL = {
    "fp16": (
        "read",
        r"Conv.*parse error.*(!inputs\.empty\(\)|inputs\.size\(\) != 0)"
        r"|cannot be loaded by the DNN engine",
    ),
    "int8-cpu": ("read", r"bufidx >= 0"),
}


def _opencv_outputs(cv2, path, data, steps: list | None = None):
    """OpenCV's outputs at batch 1 and 4; ``steps`` records how far it got (read, forward)."""
    steps = steps if steps is not None else []
    steps.append("read")
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    outputs = {}
    for batch_size in (1, 4):
        batch = np.ascontiguousarray(data[:batch_size])
        net.setInput(batch)
        steps.append("forward")
        outputs[batch_size] = np.asarray(net.forward())
    return outputs


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in OPENCV_REFUSES])
def test_opencv_dnn_reads_and_computes_onnx_kinds(artifacts, kind):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")
    folder, model, data = artifacts
    name, precision = KINDS[kind]
    for batch_size, out in _opencv_outputs(cv2, folder / name, data).items():
        _judge(_reference(model, data[:batch_size]), out, precision)


@pytest.mark.parametrize("kind", OPENCV_REFUSES)
def test_opencv_dnn_does_not_compute_these_kinds_correctly(artifacts, kind):
    """Asserted, so that an OpenCV that learns them fails here and the README's table gets updated.

    A refusal must be OpenCV's own, at the step and in the words recorded above: any other error
    (an import problem, a wrong path, our own code) fails the test.
    """
    import re

    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")
    from exporter.verify import compare_arrays, tolerance_for

    folder, model, data = artifacts
    name, precision = KINDS[kind]
    assert (folder / name).is_file(), f"the {kind} artifact was not built"
    steps: list[str] = []
    try:
        outputs = _opencv_outputs(cv2, folder / name, data, steps)
    except cv2.error as exc:
        step, words = OPENCV_REFUSAL[kind]
        assert int(cv2.__version__.split(".")[0]) >= 5, f"OpenCV {cv2.__version__} refused {kind}; 4.x computed it"
        assert steps[-1] == step, f"OpenCV refused {kind} at {steps[-1]}, expected at {step}: {exc}"
        assert re.search(words, " ".join(str(exc).split())), f"OpenCV refused {kind} for another reason: {exc}"
        return
    verdicts = [
        compare_arrays(_reference(model, data[:b]), out, tolerance_for(precision))["status"] for b, out in outputs.items()
    ]
    assert "fail" in verdicts, f"OpenCV {cv2.__version__} now computes {kind} correctly: update OPENCV_REFUSES and the README"
