"""A fast, diverse subset of the zoo sweep (benchmarks/zoo.py runs every registry model)."""

import importlib.util
import json
import math
import os

import pytest

from tests.conftest import FULL

# the required tier sweeps a classic model, a torchvision and a timm one; the full tier (CNNEXPORT_FULL=1) four more
REQUIRED = ["lenet_mnist", "resnet18", "timm:mobilenetv3_small_050"]
MORE = ["mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5", "efficientnet_b0"]
SUBSET = REQUIRED + (MORE if os.environ.get(FULL) else [])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The subset through benchmarks/zoo.py's sweep: one fleet (and one per classic model) via exporter.fleet.run_fleet."""
    from benchmarks.zoo import sweep

    names = [n for n in SUBSET if not n.startswith("timm:") or importlib.util.find_spec("timm")]
    out = tmp_path_factory.mktemp("zoo")
    lines = sweep(names, out, (3, 32, 32), samples=32, engine="local")
    fleets = {group: json.loads((out / group / "fleet.json").read_text()) for group in ("fleet", "fleet-lenet_mnist")}
    return out, {line["model"]: line for line in lines}, fleets


@pytest.mark.parametrize("name", [*REQUIRED, *(pytest.param(n, marks=pytest.mark.full) for n in MORE)])
def test_model_passes_every_stage_that_runs_here(name, swept):
    from benchmarks.zoo import BROKEN

    if name.startswith("timm:"):
        pytest.importorskip("timm", reason="timm is not installed (pip install 'cnnexport[timm]')")
    _, lines, _ = swept
    line = lines[name]
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


def test_the_sweep_is_a_fleet_of_self_describing_checkpoints(swept):
    """timm and torchvision checkpoints are saved as their training scripts save them: one recipe, one fleet."""
    _, lines, fleets = swept
    fleet = fleets["fleet"]
    folders = {row["folder"] for row in fleet["checkpoints"]}
    expected = {n.replace(":", "-") for n in SUBSET if n in lines and n != "lenet_mnist"}
    assert folders == expected
    assert fleet["summary"]["passed"] == len(expected)
    # the classic model names its architecture in its own recipe (its checkpoint is a bare state_dict)
    classic = fleets["fleet-lenet_mnist"]
    assert [row["folder"] for row in classic["checkpoints"]] == ["lenet_mnist"]
    # the line's numbers are the fleet row's
    row = next(r for r in fleet["checkpoints"] if r["folder"] == "resnet18")
    assert lines["resnet18"]["stages"]["onnx"]["cosine"] == row["stages"]["onnx"]["cosine"]


def test_a_second_sweep_rebuilds_nothing(swept):
    from benchmarks.zoo import sweep

    out, _, _ = swept
    again = sweep(["resnet18"], out, (3, 32, 32), samples=32, engine="local", chunk=1)
    cells = again[0]["stages"]
    assert all(cells[s]["cached"] for s in ("torchscript", "onnx", "simplify", "int8", "fp16")), cells


def test_zoo_table_renders_every_status():
    from benchmarks.zoo import render

    table = render(
        [
            {
                "model": "a",
                "input_shape": [3, 8, 8],
                "seconds": 1,
                "stages": {
                    "onnx": {"status": "pass", "seconds": 1.0},
                    "tensorrt": {"status": "skipped (tensorrt not installed)"},
                    "coreml": {"status": "pass (batch 1 only; a flexible batch: rank 6)", "seconds": 4.0},
                },
            },
            {
                "model": "b",
                "input_shape": [3, 224, 224],
                "seconds": 2,
                "note": "native input: RuntimeError: too small",
                "stages": {
                    "onnx": {"status": "error (torch.onnx.export failed: X)", "seconds": 2.0},
                    "broken": {"status": "caught"},
                    "tensorrt": {"status": "skipped (tensorrt not installed)"},
                    "coreml": {"status": "fail (cosine 0.5)", "seconds": 1.0},
                },
            },
        ],
        not_run=["c"],
    )
    assert "Not run yet (1; `--models` runs them): c" in table
    assert "| onnx | 1 / 2 | 0 | 3 |" in table and "| broken | 1 / 1 | 0 | 0 |" in table
    assert "| tensorrt | 0 / 0 | 2 | 0 |" in table  # skipped is never counted as run
    assert "| coreml | 1 / 2 | 0 | 5 |" in table
    assert "error (torch.onnx.export failed: X) (2.0s)" in table
    assert "| b | 3x224x224 ¹ |" in table and "- b: native input: RuntimeError: too small" in table
