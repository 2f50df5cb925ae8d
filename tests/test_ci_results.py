"""`--junit FILE` never lands on a file the command reads (the rest of --junit: tests/test_release.py)."""

from __future__ import annotations


def test_junit_onto_an_input_is_refused_before_any_work(cli, simple_cnn_ckpt, tmp_path):
    before = simple_cnn_ckpt.read_bytes()
    r = cli("onnx", simple_cnn_ckpt, "-o", tmp_path / "m.onnx", "--junit", simple_cnn_ckpt)
    assert r.exit_code == 2 and "is the source model" in r.stderr and "--junit" in r.stderr, r
    assert simple_cnn_ckpt.read_bytes() == before and not (tmp_path / "m.onnx").exists()
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{i}\n" for i in range(10)))
    r = cli("verify", tmp_path / "missing.onnx", "--checkpoint", simple_cnn_ckpt, "--labels", labels, "--junit", labels)
    assert r.exit_code == 2 and "is the --labels file" in r.stderr, r
    r = cli("run", simple_cnn_ckpt, "--recipe", "server-onnx-cpu", "-o", tmp_path / "d", "--junit", simple_cnn_ckpt)
    assert r.exit_code == 2 and "is a checkpoint" in r.stderr, r
