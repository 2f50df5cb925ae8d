"""`cnnexport openvino`: IRs verified by OpenVINO itself, with the CPU plugin's precision pinned."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import trained_digits_net
from tests.verdicts import verified

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'cnnexport[openvino]'")


@pytest.fixture(scope="module")
def digits_lenet(tmp_path_factory):
    """LeNet-5 trained briefly on the digits (real outputs, not random-init ~0 logits)."""
    folder = tmp_path_factory.mktemp("ov_lenet")
    shutil.copy(trained_digits_net(tmp_path_factory, "lenet5"), folder / "lenet5.pt")  # tests/conftest.py
    return folder / "lenet5.pt"


def _copy(ckpt, tmp_path):
    target = tmp_path / ckpt.name
    shutil.copy(ckpt, target)
    return target


def test_fp32_ir_from_a_checkpoint_matches_pytorch_at_batch_1_and_4_with_the_hint_pinned(cli, digits_lenet, tmp_path):
    from exporter.targets.openvino.runner import OpenVINORunner
    from exporter.targets.openvino.stage import deployment_default_hint

    ckpt = _copy(digits_lenet, tmp_path)
    r = cli("openvino", ckpt, "--json")
    assert r.exit_code == 0, r
    onnx, ir = r.json()["artifacts"]
    assert onnx["kind"] == "onnx" and verified(onnx["verification"])  # the verified ONNX it is converted from
    v = ir["verification"]
    assert ir["kind"] == "openvino" and verified(v) and v["precision"] == "fp32", v
    assert v["batch_sizes"] == [1, 4] and v["max_rel_err"] <= 1e-4 and v["cosine"] >= 0.99999
    assert sorted(p.name for p in tmp_path.glob("lenet5.*")) == [
        "lenet5.bin",
        "lenet5.onnx",
        "lenet5.onnx.report.json",
        "lenet5.pt",
        "lenet5.xml",
        "lenet5.xml.report.json",
    ]
    d = ir["details"]
    assert d["inference_precision_hint"] == "f32" and d["converted_from"].startswith("onnx")
    assert d["deployment_default_hint"] == deployment_default_hint()
    runner = OpenVINORunner(tmp_path / "lenet5.xml")
    assert runner.compiled_hint == "f32" and runner.batch_dim == "batch" and runner.metadata["arch"] == "lenet5"
    assert runner.infer(np.zeros((3, 1, 32, 32), np.float32))["logits"].shape == (3, 10)


def test_an_fp32_ir_computed_in_the_cpus_default_bf16_would_fail_the_fp32_rule(digits_lenet, tmp_path):
    """Why the hint is pinned: on AMX/AVX-512-BF16 CPUs OpenVINO computes "fp32" models in bf16 unless told."""
    from exporter import VerifyOptions, load_checkpoint
    from exporter.build import build
    from exporter.runners.torch import TorchRunner
    from exporter.targets.openvino.runner import OpenVINORunner
    from exporter.targets.openvino.stage import cpu_has_bf16
    from exporter.verify import verify

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16: OpenVINO computes fp32 models in fp32 here")
    ckpt = _copy(digits_lenet, tmp_path)
    loaded = load_checkpoint(ckpt)
    build("openvino", ckpt, loaded=loaded)
    opts = VerifyOptions()
    sets = opts.input_sets(loaded.spec)
    pinned = verify(OpenVINORunner(tmp_path / "lenet5.xml"), {"pytorch": TorchRunner(loaded.module)}, sets, opts.tolerance())
    default = OpenVINORunner(tmp_path / "lenet5.xml", hint="bf16")
    assert default.compiled_hint == "bf16"
    unpinned = verify(default, {"pytorch": TorchRunner(loaded.module)}, sets, opts.tolerance())
    assert pinned.status == "pass" and unpinned.status == "fail", (pinned.reason, unpinned.reason)


def test_quiet_is_quiet_in_a_fresh_process_nncf_bars_and_torch_log_lines_included(digits_lenet, tmp_path):
    """Issue 43: `-q` printed NNCF's progress bars and torch's import-time log lines ('No CUDA runtime is found')."""
    import subprocess
    import sys
    from pathlib import Path

    ckpt = _copy(digits_lenet, tmp_path)
    command = [
        str(Path(sys.executable).with_name("cnnexport")), "openvino", str(ckpt), "--precision", "int8", "--calib", "digits",
        "--samples", "64", "--holdout", "32", "-q",
    ]  # fmt: skip
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert (tmp_path / "lenet5.int8.xml").exists() and (tmp_path / "lenet5.int8.xml.report.json").exists()


def test_int8_ir_is_quantized_by_nncf_and_judged_on_held_out_samples(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    r = cli("openvino", ckpt, "--precision", "int8", "--calib", "digits", "--samples", "256", "--holdout", "64", "--json")
    assert r.exit_code == 0, r
    onnx, ir = r.json()["artifacts"]
    v, d = ir["verification"], ir["details"]
    assert ir["path"].endswith("lenet5.int8.xml") and verified(v) and v["precision"] == "int8", v
    assert d["fake_quantize_nodes"] > 0 and d["nncf"]["fast_bias_correction"] and d["calibration_samples"] == 256
    assert d["inference_precision_hint"] == "f32" and d["samples_heldout"] == 64
    judged = [c for c in v["checks"] if c["judged"] and c["reference"] != "metadata"]
    assert judged and all(c["inputs"].startswith("held-out (64") for c in judged), v["checks"]
    assert any(not c["judged"] and c["inputs"].startswith("random") for c in v["checks"])
    assert v["top1_agreement"] >= 0.9 and v["cosine"] >= 0.98
    assert (tmp_path / "lenet5.int8.bin").stat().st_size < 0.5 * (tmp_path / "lenet5.onnx").stat().st_size


def test_bf16_ir_passes_the_fp16_rule_or_is_skipped_on_a_cpu_without_bf16(cli, digits_lenet, tmp_path, monkeypatch):
    from exporter.targets.openvino import stage as ov_stage

    ckpt = _copy(digits_lenet, tmp_path)
    r = cli("openvino", ckpt, "--precision", "bf16", "--json")
    assert r.exit_code == 0, r
    v = r.json()["artifacts"][-1]["verification"]
    if ov_stage.cpu_has_bf16():
        assert verified(v) and v["precision"] == "fp16", v
        assert 0 < v["max_rel_err"] <= 1e-2  # computed in bf16: not bit-exact, within the fp16 rule
    else:
        assert v["status"] == "skipped" and v["reason"] == "cpu has no bf16"
    monkeypatch.setattr(ov_stage, "cpu_has_bf16", lambda: False)
    r = cli("openvino", ckpt, "--precision", "bf16", "-o", tmp_path / "again.xml", "--json")
    assert r.exit_code == 0, r
    v = r.json()["artifacts"][-1]["verification"]
    assert v["status"] == "skipped" and v["reason"] == "cpu has no bf16"  # never pass


def test_a_perturbed_bin_fails_verification(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    assert cli("openvino", ckpt).exit_code == 0
    assert cli("verify", tmp_path / "lenet5.xml", "--checkpoint", ckpt).exit_code == 0
    weights = tmp_path / "lenet5.bin"
    data = np.fromfile(weights, dtype=np.float32)
    data[len(data) // 2 : len(data) // 2 + 400] *= -3.0  # one block of weights changed, the graph untouched
    data.tofile(weights)
    r = cli("verify", tmp_path / "lenet5.xml", "--checkpoint", ckpt, "--json")
    assert r.exit_code == 1, r
    assert r.json()["artifacts"][0]["verification"]["status"] == "fail"


def test_bad_openvino_options_are_refused_before_any_work(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    r = cli("openvino", ckpt, "--precision", "int8", "--calib", "digits", "--method", "entropy")
    assert r.exit_code == 2 and "NNCF has no entropy calibration" in r.stderr, r
    r = cli("openvino", ckpt, "--precision", "int8")
    assert r.exit_code == 2 and "needs calibration data" in r.stderr, r
    r = cli("openvino", ckpt, "--precision", "fp64")
    assert r.exit_code == 2, r
    r = cli("openvino", ckpt, "-o", tmp_path / "model.onnx")
    assert r.exit_code == 2 and "NAME.xml" in r.stderr, r
    r = cli("openvino", ckpt, "--precision", "int8", "--calib", "digits", "--exclude", "NoSuchThing")
    assert r.exit_code == 2 and "no such op type or node" in r.stderr, r
    assert sorted(p.name for p in tmp_path.iterdir() if "xml" in p.name or p.suffix == ".bin") == []


def test_exclude_keeps_op_types_in_float(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    base = cli("openvino", ckpt, "--precision", "int8", "--calib", "digits", "--json").json()["artifacts"][-1]["details"]
    kept = cli(
        "openvino", ckpt, "--precision", "int8", "--calib", "digits", "--exclude", "Gemm", "-o", tmp_path / "k.xml", "--json"
    ).json()["artifacts"][-1]["details"]
    assert kept["nncf"]["ignored"]["types"] == ["MatMul"]
    assert kept["fake_quantize_nodes"] < base["fake_quantize_nodes"]


def test_without_openvino_the_verb_exits_3_with_the_install_line(cli, digits_lenet, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    r = cli("openvino", _copy(digits_lenet, tmp_path))
    assert r.exit_code == 3 and "pip install 'cnnexport[openvino]'" in r.stderr, r


def test_bench_times_onnx_on_both_runtimes_and_eval_reads_an_ir(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    assert cli("openvino", ckpt).exit_code == 0
    r = cli(
        "bench", tmp_path / "lenet5.onnx", tmp_path / "lenet5.xml", "--runtime", "openvino", "--batch", "2", "--seconds", "0.1",
        "--threads", "2", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    rows = {row["target"]: row for row in r.json()["rows"]}
    assert set(rows) == {"lenet5.onnx", "lenet5.onnx [openvino]", "lenet5.xml"}
    assert all(row["status"] == "ok" and row["images_per_s"] > 0 for row in rows.values())
    assert rows["lenet5.xml"]["size_bytes"] > (tmp_path / "lenet5.xml").stat().st_size  # the .bin counts
    e = cli("eval", tmp_path / "lenet5.xml", "--checkpoint", ckpt, "--data", "digits", "--json")
    assert e.exit_code == 0, e
    results = e.json()["results"]
    assert results["lenet5.xml"]["agreement_with_reference"] == 1.0


def test_recipe_openvino_stage_builds_and_caches(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    recipe = tmp_path / "ov.yaml"
    recipe.write_text(
        "name: ov\ncalibration: {data: digits, samples: 128}\n"
        "stages:\n  onnx: {enabled: true}\n  openvino: {enabled: true, precision: int8}\n"
    )
    out = tmp_path / "dist"
    first = cli("run", ckpt, "--recipe", recipe, "-o", out, "--json")
    assert first.exit_code == 0, first
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stages"]["openvino"]
    assert verified(stage["verification"]) and [f["path"] for f in stage["files"]] == ["lenet5.int8.xml", "lenet5.int8.bin"]
    second = cli("run", ckpt, "--recipe", recipe, "-o", out, "--json")
    assert second.exit_code == 0 and second.json()["timings"]["openvino"]["cached"] is True


def test_server_cpu_recipe_benches_the_verified_artifacts_and_recommends_the_fastest(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    out = tmp_path / "srv"
    args = (
        "run", ckpt, "--recipe", "server-cpu", "--calib", "digits", "-o", out, "--set", "bench.seconds=0.05",
        "--set", "bench.batch_sizes=1,4", "--set", "bench.threads=2", "--json",
    )  # fmt: skip
    r = cli(*args)
    assert r.exit_code == 0, r
    data = r.json()
    assert {k: v["status"] for k, v in data["manifest"]["stages"].items()} == {
        "onnx": "pass",
        "simplify": "pass",
        "int8": "pass",
        "openvino": "pass",
    }
    bench = data["bench"]
    rows = {(row["target"], row["batch"]) for row in bench["rows"] if row["status"] == "ok"}
    for target in ("lenet5.onnx", "lenet5.onnx [openvino]", "lenet5.int8.onnx", "lenet5.int8.onnx [openvino]", "lenet5.int8.xml"):
        assert (target, 1) in rows and (target, 4) in rows, target
    best = bench["recommended"]
    assert best["target"] in {t for t, _ in rows} and set(best["speedup_vs_onnxruntime_fp32"]) == {"1", "4"}
    assert bench["settings"]["baseline"] == "lenet5.onnx"
    assert json.loads((out / "bench.json").read_text())["recommended"] == best
    assert "fastest verified CPU artifact on this machine: " + best["target"] in (out / "report.md").read_text()
    manifest = (out / "manifest.json").read_text()
    assert "images_per_s" not in manifest  # timings stay out of the byte-identical manifest
    again = cli(*args)
    assert again.exit_code == 0 and (out / "manifest.json").read_text() == manifest
    assert all(t["cached"] for t in again.json()["timings"].values())


def test_server_cpu_recipe_without_calibration_still_recommends_among_what_passed(cli, digits_lenet, tmp_path):
    ckpt = _copy(digits_lenet, tmp_path)
    r = cli(
        "run", ckpt, "--recipe", "server-cpu", "-o", tmp_path / "srv", "--set", "bench.seconds=0.05",
        "--set", "bench.batch_sizes=2", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    stages = r.json()["manifest"]["stages"]
    assert stages["int8"]["status"].startswith("skipped (needs calibration data") and stages["openvino"]["status"].startswith(
        "skipped"
    )
    targets = {row["target"] for row in r.json()["bench"]["rows"]}
    assert not any("int8" in t for t in targets) and "lenet5.onnx [openvino]" in targets
