"""A fast, diverse subset of the zoo sweep (benchmarks/zoo.py runs every registry model)."""

import json
import math

import pytest

SUBSET = ["lenet_mnist", "resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5", "efficientnet_b0",
          "timm:mobilenetv3_small_050"]


@pytest.mark.parametrize("name", SUBSET)
def test_model_passes_every_stage_that_runs_here(name, tmp_path):
    from benchmarks.zoo import BROKEN, child

    if name.startswith("timm:"):
        pytest.importorskip("timm", reason="timm is not installed (pip install 'cnnexport[timm]')")

    line = child(name, tmp_path, (3, 32, 32), samples=32)
    stages = line["stages"]
    for stage in ("torchscript", "onnx", "onnx_legacy", "simplify", "int8", "fp16"):
        assert stages[stage]["status"] == "pass", (stage, stages[stage])
        # a pass rests on measured numbers (a verifier that skipped, or passed without comparing, has none)
        assert all(math.isfinite(stages[stage][m]) for m in ("max_rel_err", "cosine")), (stage, stages[stage])
    if "coreml" in stages:
        assert stages["coreml"]["status"] == "pass", stages["coreml"]
    if "tensorrt" in stages:  # never "pass" without having run
        assert stages["tensorrt"]["status"] == "pass" or stages["tensorrt"]["status"].startswith("skipped ("), stages["tensorrt"]
    if name in BROKEN:
        assert stages["broken"]["status"] == "caught"
    json.dumps(line)  # one JSON line per model


def test_zoo_table_renders_every_status():
    from benchmarks.zoo import render

    table = render([
        {"model": "a", "input_shape": [3, 8, 8], "seconds": 1,
         "stages": {"onnx": {"status": "pass", "seconds": 1.0}, "tensorrt": {"status": "skipped (tensorrt not installed)"},
                    "coreml": {"status": "pass (batch 1 only; a flexible batch: rank 6)", "seconds": 4.0}}},
        {"model": "b", "input_shape": [3, 224, 224], "seconds": 2, "note": "native input: RuntimeError: too small",
         "stages": {"onnx": {"status": "error (torch.onnx.export failed: X)", "seconds": 2.0}, "broken": {"status": "caught"},
                    "tensorrt": {"status": "skipped (tensorrt not installed)"}, "coreml": {"status": "fail (cosine 0.5)", "seconds": 1.0}}},
    ], not_run=["c"])
    assert "Not run yet (1; `--models` runs them): c" in table
    assert "| onnx | 1 / 2 | 0 | 3 |" in table and "| broken | 1 / 1 | 0 | 0 |" in table
    assert "| tensorrt | 0 / 0 | 2 | 0 |" in table  # skipped is never counted as run
    assert "| coreml | 1 / 2 | 0 | 5 |" in table
    assert "error (torch.onnx.export failed: X) (2.0s)" in table
    assert "| b | 3x224x224 ¹ |" in table and "- b: native input: RuntimeError: too small" in table


def test_a_killed_model_process_says_why_and_where():
    from benchmarks.zoo import child_death

    stderr = "• loading model.pt\n  warnings.warn()\n• torchscript: pass\n• onnx: pass\n  warnings.warn()\n"
    reason = child_death(-9, stderr)
    assert reason.startswith("process killed (SIGKILL: out of memory on this ")
    assert reason.endswith("; last reported: onnx: pass")
    assert child_death(-11, "") == "process died of signal 11"
    assert child_death(1, "Traceback\nValueError: bad") == "process exited 1: ValueError: bad"
