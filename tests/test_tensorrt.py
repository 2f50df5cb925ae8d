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

import numpy as np
import pytest

import exporter.targets.tensorrt as trt_stage
from exporter.errors import BackendUnavailable, BadInputError
from tests.conftest import files_in
from tests.verdicts import verified

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
        "--minShapes=images:1x3x32x32",
        "--optShapes=images:8x3x32x32",
        "--maxShapes=images:32x3x32x32",
    ]
    assert str(trt_stage.parse_batch_profile(" 4:4:4 ")) == "4:4:4"


@pytest.mark.parametrize(
    "text, why",
    [
        ("8:1:32", "increasing order"),
        ("1:64:32", "increasing order"),
        ("0:1:2", "start at 1"),
        ("-1:1:2", "start at 1"),
        ("a:b:c", "MIN:OPT:MAX"),
        ("1:2", "MIN:OPT:MAX"),
        ("1:2:3:4", "MIN:OPT:MAX"),
        ("", "MIN:OPT:MAX"),
        ("1.5:2:3", "MIN:OPT:MAX"),
    ],
)
def test_bad_batch_profiles_are_refused(text, why):
    with pytest.raises(BadInputError, match=why):
        trt_stage.parse_batch_profile(text)


@pytest.mark.parametrize(
    "text, size",
    [
        ("2G", 2 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5G", 1536 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("2gb", 2 * 1024**3),
        ("4096K", 4 * 1024**2),
        ("1048576", 1024**2),
    ],
)
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
    options = trt_stage.BuildOptions(
        trt_stage.parse_batch_profile("1:8:32"),
        workspace=trt_stage.parse_size("2G"),
        optimization_level=5,
        hardware_compatibility="ampere_plus",
        version_compatible=True,
    )
    assert options.trtexec_flags() == [
        "--memPoolSize=workspace:2048M",
        "--builderOptimizationLevel=5",
        "--hardwareCompatibilityLevel=ampere+",
        "--versionCompatible",
    ]
    assert trt_stage.BuildOptions(trt_stage.parse_batch_profile("1:1:1")).trtexec_flags() == []
    with pytest.raises(BadInputError, match="--opt-level"):
        trt_stage.BuildOptions(trt_stage.parse_batch_profile("1:1:1"), optimization_level=6)


# ----------------------------------------------------------------- sidecar vs. machine


H100 = {"tensorrt_version": "10.8.0.43", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _sidecar(**over) -> dict:
    base = {
        "format": trt_stage.SIDECAR_FORMAT,
        "tensorrt_version": "10.8.0",
        "gpu": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "hardware_compatibility": "none",
        "version_compatible": False,
        "source_onnx": "m.onnx",
    }
    return {**base, **over}


def test_sidecar_matching_machine_has_no_problems():
    assert trt_stage.compatibility_problems(_sidecar(), H100) == []
    # same compute capability, another board: TensorRT allows it
    assert trt_stage.compatibility_problems(_sidecar(gpu="NVIDIA H100 PCIe"), H100) == []


def test_sidecar_mismatches_are_each_named():
    problems = trt_stage.compatibility_problems(
        _sidecar(tensorrt_version="10.3.0", compute_capability="8.6", gpu="NVIDIA A10"), H100
    )
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

    from exporter.targets.tensorrt.runner import TensorRTRunner

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
def test_without_tensorrt_exit_3_says_what_to_do(cli, exported_onnx, tmp_path):
    model = tmp_path / exported_onnx.name
    shutil.copyfile(exported_onnx, model)
    r = cli("tensorrt", model, "--precision", "fp16")
    assert r.exit_code == 3, r
    message = " ".join(r.stderr.split())
    assert message == (
        "error: tensorrt not installed: building a TensorRT engine needs the tensorrt package and an "
        "NVIDIA GPU; install tensorrt on an NVIDIA machine, or use --emit-script DIR to write a ready-to-run trtexec build kit"
    )
    assert files_in(tmp_path) == {model.name}  # nothing was done before saying so
    with pytest.raises(BackendUnavailable):
        trt_stage.require_tensorrt()


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


def test_bad_batch_is_exit_2_before_anything_else(cli, exported_onnx, tmp_path):
    for text in ("8:1:32", "0:1:2", "a:b:c", "1:2"):
        r = cli("tensorrt", exported_onnx, "--batch", text, "--emit-script", tmp_path / "kit")
        assert r.exit_code == 2, r
        assert "--batch expects MIN:OPT:MAX" in r.stderr
    r = cli("tensorrt", exported_onnx, "--workspace", "lots", "--emit-script", tmp_path / "kit")
    assert r.exit_code == 2 and "--workspace" in r.stderr
    r = cli("tensorrt", exported_onnx, "--precision", "int8", "--emit-script", tmp_path / "kit")
    assert r.exit_code == 2 and "--calib" in r.stderr
    assert not (tmp_path / "kit").exists()


@no_trt
def test_emit_script_fp16_kit(cli, simple_cnn_ckpt, tmp_path):
    ckpt = tmp_path / "net.pt"
    shutil.copyfile(simple_cnn_ckpt, ckpt)
    kit = tmp_path / "kit"
    r = cli("tensorrt", ckpt, "--precision", "fp16", "--batch", "1:8:32", "--emit-script", kit, "--json")
    assert r.exit_code == 0, r
    report = r.json()
    onnx_entry, engine = report["artifacts"]
    assert onnx_entry["kind"] == "onnx" and verified(onnx_entry["verification"])
    assert engine["verification"]["status"] == "skipped" and engine["verification"]["reason"] == "tensorrt not installed"
    assert engine["details"]["installed"] is False and engine["sha256"] is None
    assert _kit_command(kit) == [
        "--onnx=net.onnx",
        "--saveEngine=net.engine",
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:8x3x32x32",
        "--maxShapes=input:32x3x32x32",
        "--fp16",
        "--timingCacheFile=timing.cache",
        "--skipInference",
    ]
    assert (kit / "net.onnx").read_bytes() == (tmp_path / "net.onnx").read_bytes()  # the verified model, byte for byte
    assert {p.name for p in kit.iterdir()} >= {
        "build.sh",
        "verify.sh",
        "README.md",
        "checksums.sha256",
        "net.onnx",
        "net.engine.build.json",
        "net.engine.report.json",
    }
    assert os.access(kit / "build.sh", os.X_OK)
    partial = json.loads((kit / "net.engine.build.json").read_text())
    assert partial["precision"] == "fp16" and partial["profile"]["max"] == [32, 3, 32, 32]
    assert partial["source_onnx_sha256"] == onnx_entry["sha256"] and partial["spec"]["arch"] == "simple_cnn"
    assert (
        "cnnexport verify net.engine --reference net.onnx --precision fp16 --batch-sizes 1,32" in (kit / "verify.sh").read_text()
    )
    readme = (kit / "README.md").read_text()
    assert "bash build.sh" in readme and "--checkpoint net.pt" in readme
    assert subprocess.run(["bash", "-n", str(kit / "build.sh")]).returncode == 0

    table = cli("tensorrt", ckpt, "--precision", "fp16", "--emit-script", kit)  # again, over the earlier kit
    assert table.exit_code == 0, table
    row = next(line for line in table.stdout.splitlines() if "net.engine" in line)
    assert "skipped [1]" in row and " pass " not in row  # the reason is numbered under the table
    assert "[1] net.engine: tensorrt not installed" in table.stdout


@no_trt
def test_emit_script_int8_qdq_and_calibrator_kits(cli, lenet5_ckpt, tmp_path):
    from exporter.targets.tensorrt import parse_calibration_cache

    ckpt = tmp_path / "lenet.pth"
    shutil.copyfile(lenet5_ckpt, ckpt)
    args = ("--precision", "int8", "--calib", "digits", "--samples", "64", "--holdout", "32", "--batch", "2:4:16", "--json")
    r = cli("tensorrt", ckpt, *args, "--emit-script", tmp_path / "qdq")
    assert r.exit_code == 0, r
    kinds = {a["kind"]: a for a in r.json()["artifacts"]}
    assert verified(kinds["int8-tensorrt"]["verification"])
    assert kinds["tensorrt"]["verification"]["status"] == "skipped"
    lint = kinds["tensorrt"]["details"]["tensorrt_lint"]  # the Q/DQ model the kit builds: what TensorRT's parser takes
    assert lint["status"] == "pass" and lint["violations"] == [] and lint["checked_nodes"] > 10
    again = cli("verify", tmp_path / "qdq", "--json")  # verify of a kit: the lint of the model it would build
    assert again.exit_code == 0, again
    assert again.json()["model"] == "lenet.int8-trt.onnx" and again.json()["tensorrt_lint"]["status"] == "pass"
    (tmp_path / "plain").mkdir()
    stray = cli("verify", tmp_path / "plain")  # a folder no Format claims and no kit check recognises
    assert stray.exit_code == 2 and "is a directory but no artifact" in stray.stderr, stray
    command = _kit_command(tmp_path / "qdq")
    assert command[0] == "--onnx=lenet.int8-trt.onnx"
    assert "--minShapes=input:2x1x32x32" in command and "--maxShapes=input:16x1x32x32" in command
    assert "--stronglyTyped" in command and "--int8" not in command and "--fp16" not in command
    assert (tmp_path / "qdq" / "lenet.int8-trt.onnx").read_bytes() == (tmp_path / "lenet.int8-trt.onnx").read_bytes()
    header, scales = parse_calibration_cache((tmp_path / "qdq" / "lenet.int8-trt.calib").read_text())
    assert header == "TRT-100800-EntropyCalibration2" and "input" in scales

    r = cli("tensorrt", ckpt, *args, "--int8-mode", "calibrator", "--trt-version", "10.3.0", "--emit-script", tmp_path / "cal")
    assert r.exit_code == 0, r
    command = _kit_command(tmp_path / "cal")
    assert command[0] == "--onnx=lenet.onnx"  # implicit quantization builds the fp32 model ...
    assert "--int8" in command and "--calib=lenet.int8-trt.calib" in command and "--stronglyTyped" not in command
    header, _ = parse_calibration_cache((tmp_path / "cal" / "lenet.int8-trt.calib").read_text())
    assert header == "TRT-100300-EntropyCalibration2"  # ... with a cache for the target version

    r = cli("tensorrt", ckpt, *args, "--int8-mode", "calibrator", "--trt-version", "11.0.0", "--emit-script", tmp_path / "c11")
    assert r.exit_code == 2 and "removed implicit INT8 calibration" in " ".join(r.stderr.split())
    assert not (tmp_path / "c11").exists()

    # a kit whose model was swapped for one TensorRT cannot parse is refused by verify
    import onnx
    from onnx import helper

    swapped = onnx.load(str(tmp_path / "qdq" / "lenet.int8-trt.onnx"))
    swapped.graph.node.append(helper.make_node("Bernoulli", [swapped.graph.output[0].name], ["coin"], name="coin"))
    onnx.save(swapped, str(tmp_path / "qdq" / "lenet.int8-trt.onnx"))
    bad = cli("verify", tmp_path / "qdq")
    assert bad.exit_code == 2 and "node coin (Bernoulli)" in " ".join(bad.stderr.split())


@no_trt
def test_emit_script_for_tensorrt_11_builds_the_fp16_onnx(cli, exported_onnx, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copyfile(exported_onnx, model)
    calib = tmp_path / "calib.npy"  # simple_cnn takes RGB 32x32: the 1-channel digits are refused as its calibration data
    np.save(calib, np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32))
    r = cli(
        "tensorrt", model, "--precision", "fp16", "--trt-version", "11.0.0", "--calib", calib, "--batch", "1:4:8",
        "--emit-script", tmp_path / "kit", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    kinds = {a["kind"]: a for a in r.json()["artifacts"]}
    assert verified(kinds["fp16"]["verification"])
    command = _kit_command(tmp_path / "kit")
    assert command[0] == "--onnx=m.fp16.onnx" and "--stronglyTyped" in command and "--fp16" not in command
    assert (tmp_path / "kit" / "m.fp16.onnx").read_bytes() == (tmp_path / "m.fp16.onnx").read_bytes()
    assert (tmp_path / "kit" / "m.onnx").read_bytes() == model.read_bytes()  # the verify reference


@no_trt
def test_every_builder_option_reaches_the_command(cli, simple_cnn_ckpt, tmp_path):
    """The input name comes from the model; workspace, level, compatibility and timing cache are all passed on."""
    model = tmp_path / "p.onnx"
    r = cli("onnx", simple_cnn_ckpt, "--arch", "simple_cnn", "--input-name", "pixels", "-o", model)
    assert r.exit_code == 0, r
    r = cli(
        "tensorrt", model, "--batch", "1:2:4", "--workspace", "512M", "--opt-level", "4", "--hardware-compat", "ampere_plus",
        "--version-compatible", "--timing-cache", "/var/cache/trt/shared.cache", "-o", tmp_path / "p.plan",
        "--emit-script", tmp_path / "kit",
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert _kit_command(tmp_path / "kit") == [
        "--onnx=p.onnx",
        "--saveEngine=p.plan",
        "--minShapes=pixels:1x3x32x32",
        "--optShapes=pixels:2x3x32x32",
        "--maxShapes=pixels:4x3x32x32",
        "--noTF32",
        "--memPoolSize=workspace:512M",
        "--builderOptimizationLevel=4",
        "--hardwareCompatibilityLevel=ampere+",
        "--versionCompatible",
        "--timingCacheFile=/var/cache/trt/shared.cache",
        "--skipInference",
    ]
    partial = json.loads((tmp_path / "kit" / "p.plan.build.json").read_text())
    assert (
        partial["input"],
        partial["workspace_bytes"],
        partial["optimization_level"],
        partial["hardware_compatibility"],
        partial["version_compatible"],
    ) == ("pixels", 512 * 1024**2, 4, "ampere_plus", True)


@no_trt
def test_kit_is_never_half_written(cli, exported_onnx, tmp_path):
    from exporter.targets.tensorrt import KitRequest, write_kit

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    r = cli("tensorrt", exported_onnx, "--emit-script", busy)
    assert r.exit_code == 2 and "not empty" in r.stderr
    assert files_in(busy) == {"notes.txt"}

    plan = trt_stage.decide_plan("10.8.0", "int8", "calibrator")
    options = trt_stage.BuildOptions(trt_stage.parse_batch_profile("1:1:2"))
    request = KitRequest(
        tmp_path / "kit", "m.engine", exported_onnx, exported_onnx, plan, options, "input", (3, 32, 32), {}, calib=None
    )  # an int8 kit without its cache fails after the models were copied
    with pytest.raises(BadInputError):
        write_kit(request)
    assert files_in(tmp_path) == {"busy", "busy/notes.txt"}  # no kit, no staging folder left


@no_trt
def test_build_script_refuses_changed_models_and_missing_trtexec(cli, exported_onnx, tmp_path):
    kit = tmp_path / "kit"
    assert cli("tensorrt", exported_onnx, "--emit-script", kit).exit_code == 0
    env = {**os.environ, "PATH": "/usr/bin:/bin", "TRTEXEC": "trtexec-not-installed"}
    run = subprocess.run(["bash", str(kit / "build.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 3 and "trtexec not found" in run.stderr
    with open(kit / exported_onnx.name, "ab") as fh:
        fh.write(b"\0")
    # `false` stands in for trtexec only to get past the PATH check: the checksum stops the build first
    run = subprocess.run(["bash", str(kit / "build.sh")], env={**env, "TRTEXEC": "false"}, capture_output=True, text=True)
    assert run.returncode != 0 and "FAILED" in run.stdout + run.stderr
    assert not (kit / "build.log").exists()


# ----------------------------------------------------------------- with TensorRT and a GPU


def _need_trt_gpu():
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install tensorrt on an NVIDIA machine)")
    ok, why = trt_stage.cuda_status()
    if not ok:
        pytest.skip(f"needs an NVIDIA GPU: {why}")


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_verifies_and_refuses_a_foreign_sidecar(cli, simple_cnn_ckpt, tmp_path, precision):
    _need_trt_gpu()
    ckpt = tmp_path / "net.pt"
    shutil.copyfile(simple_cnn_ckpt, ckpt)
    r = cli("tensorrt", ckpt, "--precision", precision, "--batch", "1:4:8", "--timing-cache", tmp_path / "t.cache", "--json")
    assert r.exit_code == 0, r
    engine = _engine_entry(r.json())
    assert verified(engine["verification"]) and engine["verification"]["batch_sizes"] == [1, 8]
    sidecar = json.loads((tmp_path / "net.engine.json").read_text())
    assert sidecar["precision"] == precision and sidecar["tensorrt_version"] and sidecar["compute_capability"]
    assert (tmp_path / "t.cache").stat().st_size > 0
    assert (
        cli("verify", tmp_path / "net.engine", "--checkpoint", ckpt, "--precision", precision, "--batch-sizes", "1,8").exit_code
        == 0
    )
    sidecar["tensorrt_version"] = "9.9.9"
    (tmp_path / "net.engine.json").write_text(json.dumps(sidecar))
    r = cli("verify", tmp_path / "net.engine", "--checkpoint", ckpt)
    assert r.exit_code == 2 and "cannot run here" in r.stderr


@pytest.mark.tensorrt
def test_int8_qdq_engine_is_judged_on_held_out_digits(cli, lenet5_ckpt, tmp_path):
    _need_trt_gpu()
    r = cli(
        "tensorrt", lenet5_ckpt, "--precision", "int8", "--calib", "digits", "--samples", "128", "--batch", "1:8:32",
        "-o", tmp_path / "l.engine", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    checks = _engine_entry(r.json())["verification"]["checks"]
    assert any(c["inputs"].startswith("held-out") and c["judged"] and c["status"] == "pass" for c in checks)


def test_absurd_workspace_is_a_clean_error():
    from exporter.errors import BadInputError
    from exporter.targets.tensorrt import parse_size

    with pytest.raises(BadInputError, match="larger than any GPU"):
        parse_size("1" * 400 + "G")


# --------------------------------------------------------------------------- the TensorRT lint


def _graph(nodes, inits=(), opset=17, input_dims=("batch", 3, 8, 8), out_dims=None):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims)],
        initializer=list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_lint_refuses_ops_without_a_tensorrt_importer_and_names_the_node(cli, tmp_path):
    import onnx
    from onnx import helper

    from exporter.targets.tensorrt.lint import lint

    model = _graph(
        [helper.make_node("Relu", ["input"], ["r"], name="relu_1"), helper.make_node("Bernoulli", ["r"], ["output"], name="coin")]
    )  # marked N in the table
    result = lint(model)
    assert result["status"] == "fail"
    assert result["violations"] == [
        {
            "node": "coin",
            "op": "Bernoulli",
            "verdict": "violation",
            "reason": "TensorRT's ONNX parser has no importer for Bernoulli",
        }
    ]
    from exporter.spec import METADATA_KEY, ModelSpec

    helper.set_model_props(model, {METADATA_KEY: ModelSpec("coin", 8, 3, 8, 8).to_json()})
    path = tmp_path / "coin.onnx"
    onnx.save(model, path)
    r = cli("tensorrt", path, "--emit-script", tmp_path / "kit")
    assert r.exit_code == 2, r
    assert "TensorRT's ONNX parser would refuse coin.onnx: node coin (Bernoulli)" in " ".join(r.stderr.split())
    assert not (tmp_path / "kit").exists()  # no kit


def test_lint_says_unknown_where_the_table_cannot_tell():
    from onnx import helper

    from exporter.targets.tensorrt.lint import lint

    custom = _graph([helper.make_node("Relu", ["input"], ["output"], name="r")], opset=23)
    result = lint(custom)
    assert result["status"] == "unknown" and result["unknown"][0]["op"] == "opset"  # beyond the table's opsets
    listed = _graph([helper.make_node("NoSuchOp", ["input"], ["output"], name="x")])
    assert (
        lint(listed)["status"] == "unknown" and lint(listed)["unknown"][0]["reason"] == "not in TensorRT's operator support table"
    )
    plugin = _graph([helper.make_node("FusedConv", ["input"], ["output"], name="f", domain="com.microsoft")])
    assert lint(plugin)["status"] == "fail" and "plugin" in lint(plugin)["violations"][0]["reason"]
    dynamic = _graph([helper.make_node("Relu", ["input"], ["output"], name="r")], input_dims=("batch", 3, "h", "w"))
    assert lint(dynamic)["status"] == "fail" and "dynamic" in lint(dynamic)["violations"][0]["reason"]


def test_lint_refuses_qoperator_and_cpu_qdq_models_and_passes_the_tensorrt_flavour(cli, exported_onnx, tmp_path):
    """QLinearConv (onnxruntime's QOperator format) and the CPU flavour's uint8 Q/DQ with int32 bias DQ are refused."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from exporter.targets.tensorrt.lint import lint

    batches = iter([{"input": np.random.default_rng(i).standard_normal((4, 3, 32, 32)).astype(np.float32)} for i in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    qop = tmp_path / "qop.onnx"
    quantize_static(str(exported_onnx), str(qop), Reader(), quant_format=QuantFormat.QOperator)
    result = lint(qop)
    assert result["status"] == "fail" and "QLinearConv" in {v["op"] for v in result["violations"]}
    r = cli("tensorrt", qop, "--emit-script", tmp_path / "kit")
    assert r.exit_code == 2 and "has no importer for" in r.stderr and not (tmp_path / "kit").exists()

    calib = tmp_path / "calib.npy"  # simple_cnn takes RGB 32x32 (the 1-channel digits are refused for it)
    np.save(calib, np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32))
    common = ("--calib", calib, "--samples", "32", "--holdout", "16", "-q")
    cpu, trt = tmp_path / "cpu.onnx", tmp_path / "trt.onnx"
    assert cli("quantize", exported_onnx, "-o", cpu, *common).exit_code in (0, 1)
    assert cli("quantize", exported_onnx, "--target", "tensorrt", "-o", trt, *common).exit_code in (0, 1)
    for path in (cpu, trt):
        if not path.exists():  # an artifact that failed its own verification is not installed: keep it for the lint
            pytest.skip("quantized model failed verification")
    reasons = " ".join(v["reason"] for v in lint(cpu)["violations"])
    assert "int32 (bias) tensor behind DequantizeLinear" in reasons and "uint8 Q/DQ" in reasons
    assert lint(trt)["status"] == "pass"


def test_an_equal_of_two_booleans_is_exported_as_not_xor_which_tensorrt_parses():
    """torch's integer floor division exports a sign correction with Equal(BOOL, BOOL) (YOLO26's top-k);
    TensorRT's Equal takes numbers only. The ONNX stage rewrites it as Not(Xor): the same truth table."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from exporter.targets.onnx.stage import boolean_equals_as_xnor
    from exporter.targets.tensorrt.lint import lint

    nodes = [
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Less", ["a", "zero"], ["a_neg"], name="a_neg"),
        helper.make_node("Less", ["b", "zero"], ["b_neg"], name="b_neg"),
        helper.make_node("Equal", ["a_neg", "b_neg"], ["same_sign"], name="same_sign"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("same_sign", TensorProto.BOOL, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert lint(model)["status"] == "fail" and "BOOL" in lint(model)["violations"][0]["reason"]
    a, b = np.array([1, -1, 1, -1], np.float32), np.array([1, 1, -1, -1], np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString()).run(None, {"a": a, "b": b})[0].tolist()

    before = run(model)
    assert boolean_equals_as_xnor(model) == 1
    assert run(model) == before == [True, False, False, True]
    assert [n.op_type for n in model.graph.node][-2:] == ["Xor", "Not"] and lint(model)["status"] == "pass"


@no_trt
def test_a_recipe_builds_the_int8_engine_from_its_own_int8_tensorrt_stage(cli, lenet5_ckpt, tmp_path):
    """per_channel / exclude of stages.int8_tensorrt reach the engine: its kit holds that stage's model, byte for byte."""
    import onnx

    from exporter.recipe import load as load_recipe
    from exporter.run import plan

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "calibration: {samples: 64, holdout: 32}\n"
        "stages:\n"
        "  onnx: {enabled: true}\n"
        "  int8_tensorrt: {enabled: true, per_channel: false, exclude: [Gemm]}\n"
        "  tensorrt: {enabled: true, precision: int8, batch: '1:4:8'}\n"
    )
    upstream = {stage.spec.name: stage.upstream for stage in plan(load_recipe(recipe))}
    assert upstream["tensorrt"] == "int8_tensorrt" and upstream["int8_tensorrt"] == "onnx"
    out = tmp_path / "out"
    r = cli("run", lenet5_ckpt, "--recipe", recipe, "-o", out, "--calib", "digits", "--json")
    assert r.exit_code == 0, r
    stages = r.json()["manifest"]["stages"]
    assert verified(stages["int8_tensorrt"]["verification"])
    assert stages["tensorrt"]["status"] == "skipped (tensorrt not installed)"
    (qdq,) = [f["path"] for f in stages["int8_tensorrt"]["files"] if f["path"].endswith(".onnx")]
    kit = next(Path(f["path"]).parent for f in stages["tensorrt"]["files"] if f["path"].endswith("build.sh"))
    assert (out / kit / Path(qdq).name).read_bytes() == (out / qdq).read_bytes()  # not quantized a second time
    assert _kit_command(out / kit)[0] == f"--onnx={Path(qdq).name}"
    model = onnx.load(str(out / qdq))
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert gemms and all(scales[n.input[1]].dtype == np.float32 for n in gemms)  # excluded: float weights, no DQ
    weight_scales = [scales[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in scales]
    assert weight_scales and all(s.size == 1 for s in weight_scales)  # per_tensor reached the model the engine is built from

    plain = tmp_path / "plain.yaml"  # without an int8_tensorrt stage the engine's flow quantizes the ONNX itself
    plain.write_text("stages:\n  onnx: {enabled: true}\n  tensorrt: {enabled: true, precision: int8}\n")
    assert {s.spec.name: s.upstream for s in plan(load_recipe(plain))}["tensorrt"] == "onnx"
