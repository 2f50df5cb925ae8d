"""`cnnexport tensorrt`: everything that can run without TensorRT does; the rest needs TensorRT + a GPU.

Nothing here fakes TensorRT: without it the engine is reported `skipped (tensorrt not installed)`
and the build kit is checked for its exact content. Tests marked `tensorrt` build real engines
and skip, saying why, where TensorRT or a CUDA GPU is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.errors import BackendUnavailable, BadInputError
from exporter.stages import tensorrt as trt_stage
from tests.conftest import files_in

HAVE_TRT = trt_stage.tensorrt_status()[0] is not None
no_trt = pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here: the no-TensorRT path cannot be observed")


def _kit_command(kit: Path) -> list[str]:
    """The trtexec arguments in build.sh, one per line as written."""
    text = (kit / "build.sh").read_text()
    block = text.split('"$TRTEXEC" \\\n', 1)[1].split("2>&1 | tee build.log", 1)[0]
    return [line.strip().rstrip("\\").strip() for line in block.splitlines() if line.strip().rstrip("\\").strip()]


def _engine_entry(report: dict) -> dict:
    return next(a for a in report["artifacts"] if a["kind"] == "tensorrt")


# ----------------------------------------------------------------- option parsing


def test_batch_profile_parses_min_opt_max():
    profile = trt_stage.parse_batch_profile("1:8:32")
    assert (profile.min, profile.opt, profile.max) == (1, 8, 32)
    assert profile.trtexec_flags("images", (3, 32, 32)) == [
        "--minShapes=images:1x3x32x32", "--optShapes=images:8x3x32x32", "--maxShapes=images:32x3x32x32"]
    assert str(trt_stage.parse_batch_profile(" 4:4:4 ")) == "4:4:4"


@pytest.mark.parametrize("text, why", [
    ("8:1:32", "increasing order"), ("1:64:32", "increasing order"), ("0:1:2", "start at 1"), ("-1:1:2", "start at 1"),
    ("a:b:c", "MIN:OPT:MAX"), ("1:2", "MIN:OPT:MAX"), ("1:2:3:4", "MIN:OPT:MAX"), ("", "MIN:OPT:MAX"), ("1.5:2:3", "MIN:OPT:MAX"),
])
def test_bad_batch_profiles_are_refused(text, why):
    with pytest.raises(BadInputError, match=why):
        trt_stage.parse_batch_profile(text)


@pytest.mark.parametrize("text, size", [
    ("2G", 2 * 1024**3), ("512M", 512 * 1024**2), ("1.5G", 1536 * 1024**2), ("2GiB", 2 * 1024**3), ("2gb", 2 * 1024**3),
    ("4096K", 4 * 1024**2), ("1048576", 1024**2),
])
def test_workspace_sizes(text, size):
    assert trt_stage.parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "2X", "-1G", "", "1024", "0M"])
def test_bad_workspace_sizes_are_refused(text):
    with pytest.raises(BadInputError, match="--workspace"):
        trt_stage.parse_size(text)


# ----------------------------------------------------------------- TensorRT 10.x vs 11.x decisions


@pytest.mark.parametrize("version", ["10.0.1", "10.8.0", "10.13.2.6"])
def test_tensorrt_10_decisions(version):
    fp32 = trt_stage.decide_plan(version, "fp32")
    assert (fp32.onnx, fp32.strongly_typed, fp32.builder_flags, fp32.cleared_flags) == ("fp32", False, (), ("TF32",))
    assert fp32.trtexec_flags() == ["--noTF32"]

    fp16 = trt_stage.decide_plan(version, "fp16")  # weak typing: the fp32 model + BuilderFlag.FP16
    assert (fp16.onnx, fp16.strongly_typed, fp16.builder_flags, fp16.calibrator) == ("fp32", False, ("FP16",), False)
    assert fp16.trtexec_flags() == ["--fp16"]

    qdq = trt_stage.decide_plan(version, "int8", "qdq")  # explicit quantization: strongly typed Q/DQ model, no INT8 flag
    assert (qdq.onnx, qdq.strongly_typed, qdq.builder_flags, qdq.calibrator) == ("qdq", True, (), False)
    assert qdq.trtexec_flags() == ["--stronglyTyped"]

    calib = trt_stage.decide_plan(version, "int8", "calibrator")  # implicit: fp32 model + INT8 flag + calibration cache
    assert (calib.onnx, calib.strongly_typed, calib.builder_flags, calib.calibrator) == ("fp32", False, ("INT8",), True)
    assert calib.trtexec_flags("m.calib") == ["--int8", "--calib=m.calib"]


def test_weak_typing_deprecation_is_noted_from_10_12():
    assert not any("deprecated" in n for n in trt_stage.decide_plan("10.11.0", "fp16").notes)
    assert any("deprecated weakly typed" in n for n in trt_stage.decide_plan("10.12.0", "fp16").notes)


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1", "12.0.0"])
def test_tensorrt_11_decisions(version):
    fp32 = trt_stage.decide_plan(version, "fp32")
    assert (fp32.onnx, fp32.strongly_typed, fp32.builder_flags) == ("fp32", True, ())

    fp16 = trt_stage.decide_plan(version, "fp16")  # BuilderFlag.FP16 is gone: the fp16 ONNX, strongly typed
    assert (fp16.onnx, fp16.strongly_typed, fp16.builder_flags) == ("fp16", True, ())
    assert "--fp16" not in fp16.trtexec_flags() and "--stronglyTyped" in fp16.trtexec_flags()

    qdq = trt_stage.decide_plan(version, "int8", "qdq")
    assert (qdq.onnx, qdq.strongly_typed, qdq.builder_flags) == ("qdq", True, ())

    with pytest.raises(BadInputError, match="removed implicit INT8 calibration.*--int8-mode qdq"):
        trt_stage.decide_plan(version, "int8", "calibrator")
    for plan in (fp32, fp16, qdq):
        assert not {"FP16", "INT8"} & set(plan.builder_flags)


def test_tensorrt_older_than_10_is_refused():
    with pytest.raises(BadInputError, match="older than 10.0"):
        trt_stage.decide_plan("8.6.1", "fp16")


def test_build_options_trtexec_flags():
    options = trt_stage.BuildOptions(trt_stage.parse_batch_profile("1:8:32"), workspace=trt_stage.parse_size("2G"),
                                     optimization_level=5, hardware_compatibility="ampere_plus", version_compatible=True)
    assert options.trtexec_flags() == ["--memPoolSize=workspace:2048M", "--builderOptimizationLevel=5",
                                       "--hardwareCompatibilityLevel=ampere+", "--versionCompatible"]
    assert trt_stage.BuildOptions(trt_stage.parse_batch_profile("1:1:1")).trtexec_flags() == []
    with pytest.raises(BadInputError, match="--opt-level"):
        trt_stage.BuildOptions(trt_stage.parse_batch_profile("1:1:1"), optimization_level=6)


# ----------------------------------------------------------------- sidecar vs. machine


H100 = {"tensorrt_version": "10.8.0.43", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _sidecar(**over) -> dict:
    base = {"format": trt_stage.SIDECAR_FORMAT, "tensorrt_version": "10.8.0", "gpu": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0", "hardware_compatibility": "none", "version_compatible": False, "source_onnx": "m.onnx"}
    return {**base, **over}


def test_sidecar_matching_machine_has_no_problems():
    assert trt_stage.compatibility_problems(_sidecar(), H100) == []
    # same compute capability, another board: TensorRT allows it
    assert trt_stage.compatibility_problems(_sidecar(gpu="NVIDIA H100 PCIe"), H100) == []


def test_sidecar_mismatches_are_each_named():
    problems = trt_stage.compatibility_problems(_sidecar(tensorrt_version="10.3.0", compute_capability="8.6", gpu="NVIDIA A10"), H100)
    assert len(problems) == 2
    assert "TensorRT 10.3.0" in problems[0] and "10.8.0.43" in problems[0]
    assert "compute capability 8.6" in problems[1] and "9.0" in problems[1]
    with pytest.raises(BadInputError, match="cannot run here.*rebuild it on this machine"):
        trt_stage.ensure_compatible(Path("m.engine"), _sidecar(tensorrt_version="11.0.0"), H100)


def test_version_and_hardware_compatible_engines():
    vc = _sidecar(version_compatible=True, tensorrt_version="10.3.0")
    assert trt_stage.compatibility_problems(vc, H100) == []  # later runtime: fine
    assert trt_stage.compatibility_problems(vc, {**H100, "tensorrt_version": "10.2.0"})  # older: not
    ampere = _sidecar(hardware_compatibility="ampere_plus", compute_capability="8.6")
    assert trt_stage.compatibility_problems(ampere, H100) == []
    turing = {**H100, "gpu": "Tesla T4", "compute_capability": "7.5"}
    assert "Ampere and newer" in trt_stage.compatibility_problems(ampere, turing)[0]
    same = _sidecar(hardware_compatibility="same_cc", compute_capability="8.6")
    assert trt_stage.compatibility_problems(same, H100)


def test_sidecar_must_exist_and_be_ours(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(BadInputError, match="no sidecar m.engine.json"):
        trt_stage.read_sidecar(engine)
    (tmp_path / "m.engine.json").write_text('{"format": "something else"}')
    with pytest.raises(BadInputError, match="not a cnnexport TensorRT sidecar"):
        trt_stage.read_sidecar(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps(_sidecar()))
    assert trt_stage.read_sidecar(engine)["compute_capability"] == "9.0"


def test_runner_keeps_every_call_inside_the_profile():
    """Batches beyond the profile run in chunks, short ones padded: only the splitting is tested here (no engine)."""
    import numpy as np

    from exporter.runners.tensorrt import TensorRTRunner

    runner = object.__new__(TensorRTRunner)
    runner.min_batch, runner.max_batch = 2, 4
    seen = []

    def run(batch):
        seen.append(len(batch))
        assert 2 <= len(batch) <= 4
        return {"logits": batch.reshape(len(batch), -1)[:, :3] * 2}

    runner._run = run
    x = np.arange(9 * 12, dtype=np.float32).reshape(9, 3, 2, 2)
    out = runner.infer(x)["logits"]
    assert seen == [4, 4, 2] and out.shape == (9, 3)
    np.testing.assert_array_equal(out, x.reshape(9, -1)[:, :3] * 2)
    assert runner.infer(x[:1])["logits"].shape == (1, 3) and seen[-1] == 2


# ----------------------------------------------------------------- without TensorRT (this machine, CI)


@no_trt
def test_verify_engine_without_tensorrt_exits_3(cli, simple_cnn_ckpt, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not built here")
    r = cli("verify", engine, "--checkpoint", simple_cnn_ckpt, "--arch", "simple_cnn")
    assert r.exit_code == 3, r
    assert " ".join(r.stderr.split()).split(" error: ", 1)[-1] == (
        "tensorrt not installed: running a TensorRT engine needs the tensorrt package and an NVIDIA GPU; "
        "run this on the NVIDIA machine the engine was built for, with tensorrt installed"
    )
