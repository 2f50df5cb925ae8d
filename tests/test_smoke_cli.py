from tests.conftest import files_in
from tests.verdicts import verified


def test_onnx_export_verifies_and_writes_report(cli, simple_cnn_ckpt, tmp_path):
    out = tmp_path / "m.onnx"
    r = cli("onnx", simple_cnn_ckpt, "-o", out, "--json")
    assert r.exit_code == 0, r
    report = r.json()
    art = report["artifacts"][0]
    assert art["kind"] == "onnx"
    assert verified(art["verification"])
    assert art["verification"]["batch_sizes"] == [1, 4]
    assert 0 <= art["verification"]["max_abs_err"] < 1e-3
    assert art["verification"]["cosine"] > 0.99999
    assert report["model"]["arch"] == "simple_cnn"
    assert report["model"]["input_shape"] == [3, 32, 32]
    assert files_in(tmp_path) == {"m.onnx", "m.onnx.report.json"}


def test_help_shows_no_value_after_a_flag_and_the_type_after_an_option(cli):
    """Issue 43: `--json <bool>` read as if the flag took a value; options that take one still say which."""
    import typer

    from exporter.cli import app

    verbs = sorted(typer.main.get_command(app).commands)
    assert {"onnx", "quantize", "run", "demo", "verify"} <= set(verbs)
    for args in ([], *([verb] for verb in verbs)):
        r = cli(*args, "--help")
        assert r.exit_code == 0, (args, r)
        assert "<bool>" not in r.stdout, (args, [line for line in r.stdout.splitlines() if "<bool>" in line])
        assert "--help" in r.stdout
    onnx = cli("onnx", "--help").stdout
    assert "<int>" in onnx and "<dynamo|legacy>" in onnx  # --opset, --exporter
