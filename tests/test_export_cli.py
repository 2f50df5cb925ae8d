"""The export verbs through the real CLI, with real files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import build_model, files_in
from tests.verdicts import verified

BAKED_MODEL = '''
import torch
from torch import nn

class BakedBatch(nn.Module):
    """Reads the batch size as a Python int: tracing bakes it into the graph."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x):
        batch = int(x.shape[0])
        return self.fc(torch.relu(self.conv(x)).reshape(batch, -1))
'''


def test_report_schema_and_file_match_stdout(cli, simple_cnn_ckpt, tmp_path):
    out = tmp_path / "m.onnx"
    r = cli("onnx", simple_cnn_ckpt, "-o", out, "--json")
    assert r.exit_code == 0, r
    report = r.json()
    assert json.loads((tmp_path / "m.onnx.report.json").read_text()) == report
    art = report["artifacts"][0]
    for key in ("kind", "path", "sha256", "bytes", "seconds", "verification"):
        assert key in art
    for key in ("status", "max_abs_err", "cosine", "top1_agreement", "batch_sizes"):
        assert key in art["verification"]
    assert art["bytes"] == out.stat().st_size
    import hashlib

    assert art["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    for key in ("arch", "num_classes", "input_shape", "mean", "std", "params"):
        assert key in report["model"]
    assert report["model"]["params"] == sum(p.numel() for p in build_model("simple_cnn").parameters())
    assert {"cnnexport", "torch", "onnx", "onnxruntime"} <= set(report["versions"])


def test_onnx_has_dynamic_batch_names_and_metadata(exported_onnx):
    import onnx

    model = onnx.load(str(exported_onnx))
    assert model.graph.input[0].name == "input"
    assert model.graph.output[0].name == "logits"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    spec = json.loads(meta["cnnexport.spec"])
    assert spec["arch"] == "simple_cnn" and spec["channels"] == 3 and spec["height"] == 32
    assert spec["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    assert "cnnexport.version" in meta
    assert not list(exported_onnx.parent.glob("*.data"))  # self-contained


def test_default_output_lands_beside_the_checkpoint(cli, tmp_path, simple_cnn_ckpt):
    ckpt = tmp_path / "net.pt"
    ckpt.write_bytes(simple_cnn_ckpt.read_bytes())
    r = cli("onnx", ckpt, "--exporter", "legacy", "--opset", "13", "--input-name", "images", "--output-name", "scores")
    assert r.exit_code == 0, r
    import onnx

    model = onnx.load(str(tmp_path / "net.onnx"))
    assert model.graph.input[0].name == "images" and model.graph.output[0].name == "scores"
    assert model.opset_import[0].version == 13
    assert (tmp_path / "net.onnx.report.json").exists()


def _baked_checkpoint(folder: Path) -> tuple[Path, str]:
    """A BakedBatch checkpoint and the --arch that builds it (its code written beside it)."""
    import importlib.util

    import torch

    code = folder / "baked_model.py"
    code.write_text(BAKED_MODEL)
    spec = importlib.util.spec_from_file_location(f"baked_{abs(hash(str(folder)))}", code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = folder / "baked.pt"
    torch.save(module.BakedBatch().state_dict(), ckpt)
    return ckpt, f"{code}:BakedBatch"


def test_baked_batch_fails_verification_with_exit_1(cli, tmp_path):
    ckpt, arch = _baked_checkpoint(tmp_path)
    out = tmp_path / "out"
    r = cli("onnx", ckpt, "--arch", arch, "--input-shape", "3,8,8", "--exporter", "legacy", "-o", out / "baked.onnx")
    assert r.exit_code == 1, r
    assert "verification failed" in r.stderr
    assert files_in(out) == set()  # the wrong artifact is not installed


def test_keep_failed_keeps_the_rejected_artifact_under_another_name(cli, tmp_path):
    ckpt, arch = _baked_checkpoint(tmp_path)
    r = cli(
        "onnx", ckpt, "--arch", arch, "--input-shape", "3,8,8", "--exporter", "legacy", "-o", tmp_path / "o" / "b.onnx",
        "--keep-failed", "--json",
    )  # fmt: skip
    assert r.exit_code == 1, r
    assert files_in(tmp_path / "o") == {"b.rejected.onnx", "b.rejected.onnx.report.json"}
    assert r.json()["artifacts"][0]["verification"]["status"] == "fail"


def _perturb_first_weight(src: Path, dst: Path, delta: float) -> str:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    init = next(i for i in model.graph.initializer if len(i.dims) == 4)
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(dst))
    return init.name


def test_verify_passes_the_good_artifact_and_fails_one_perturbed_weight(cli, exported_onnx, simple_cnn_ckpt, tmp_path):
    good = cli("verify", exported_onnx, "--checkpoint", simple_cnn_ckpt, "--json")
    assert good.exit_code == 0, good
    assert verified(good.json()["artifacts"][0]["verification"])
    bad = tmp_path / "bad.onnx"
    _perturb_first_weight(exported_onnx, bad, delta=0.5)
    r = cli("verify", bad, "--checkpoint", simple_cnn_ckpt, "--json")
    assert r.exit_code == 1, r
    v = r.json()["artifacts"][0]["verification"]
    assert v["status"] == "fail" and v["max_rel_err"] > 1e-4


def test_verify_catches_a_wrong_mean_in_the_metadata(cli, exported_onnx, simple_cnn_ckpt, tmp_path):
    import onnx

    model = onnx.load(str(exported_onnx))
    for prop in model.metadata_props:
        if prop.key == "cnnexport.spec":
            spec = json.loads(prop.value)
            spec["mean"] = [0.5, 0.5, 0.5]
            prop.value = json.dumps(spec)
    onnx.save(model, str(tmp_path / "wrong_mean.onnx"))
    r = cli("verify", tmp_path / "wrong_mean.onnx", "--checkpoint", simple_cnn_ckpt)
    assert r.exit_code == 1, r
    assert "mean" in r.stderr


def test_verify_catches_a_fixed_batch_dimension(cli, exported_onnx, simple_cnn_ckpt, tmp_path):
    import onnx

    model = onnx.load(str(exported_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    r = cli("verify", tmp_path / "fixed.onnx", "--checkpoint", simple_cnn_ckpt, "--json")
    assert r.exit_code == 1, r
    assert "fixed to 1" in r.json()["artifacts"][0]["verification"]["reason"]


def test_verify_against_another_artifact_and_with_real_images(cli, exported_onnx, simple_cnn_ckpt, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = tmp_path / "photos"
    images.mkdir()
    for i, photo in enumerate(load_sample_images().images):
        Image.fromarray(photo).save(images / f"photo{i}.jpg")
    r = cli("verify", exported_onnx, "--reference", exported_onnx, "--images", images, "--json")
    assert r.exit_code == 0, r
    checks = r.json()["artifacts"][0]["verification"]["checks"]
    assert any(c["inputs"] == "images (2)" and c["max_abs_err"] == 0.0 for c in checks)
    r = cli("verify", exported_onnx, "--checkpoint", simple_cnn_ckpt, "--images", images, "--batch-sizes", "2,3", "--json")
    assert r.exit_code == 0, r
    assert r.json()["artifacts"][0]["verification"]["batch_sizes"] == [2, 3]


def test_no_verify_is_reported_as_skipped_never_pass(cli, simple_cnn_ckpt, tmp_path):
    r = cli("torchscript", simple_cnn_ckpt, "-o", tmp_path / "m.ts", "--no-verify", "--json")
    assert r.exit_code == 0, r
    v = r.json()["artifacts"][0]["verification"]
    assert v["status"] == "skipped" and v["reason"] == "--no-verify"


@pytest.mark.parametrize("mode", ["trace", "script"])
def test_torchscript_trace_and_script_load_back(cli, lenet5_ckpt, tmp_path, mode):
    import torch

    out = tmp_path / f"{mode}.ts"
    args = ["torchscript", lenet5_ckpt, "-o", out, "--json"] + (["--script"] if mode == "script" else [])
    r = cli(*args)
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][0]
    assert art["details"]["mode"] == mode and verified(art["verification"])
    loaded = torch.jit.load(str(out))
    assert tuple(loaded(torch.zeros(3, 1, 32, 32)).shape) == (3, 7)


def test_simplify_reports_node_counts_and_checks_both_references(cli, exported_onnx, simple_cnn_ckpt, tmp_path):
    src = tmp_path / "src.onnx"
    src.write_bytes(exported_onnx.read_bytes())
    r = cli("simplify", src, "--checkpoint", simple_cnn_ckpt, "--json")
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][0]
    assert art["details"]["nodes_before"] >= art["details"]["nodes_after"] > 0
    refs = {c["reference"] for c in art["verification"]["checks"]}
    assert {"source onnx", "pytorch"} <= refs
    assert (tmp_path / "src.sim.onnx").exists()
    r = cli("simplify", src, "-o", src)
    assert r.exit_code == 2 and "is the ONNX model" in r.stderr and "destroy" in r.stderr


def test_simplify_checks_the_checkpoint_at_the_onnx_input_spec(cli, simple_cnn_ckpt, tmp_path):
    """An ONNX exported at a non-default size and normalization: the checkpoint is run with the
    spec stored in the ONNX, since `simplify` has no --input-shape of its own."""
    src = tmp_path / "wide.onnx"
    r = cli(
        "onnx", simple_cnn_ckpt, "--arch", "simple_cnn", "--input-shape", "3,48,40", "--mean", "0.5,0.5,0.5",
        "--std", "0.2,0.2,0.2", "-o", src,
    )  # fmt: skip
    assert r.exit_code == 0, r
    r = cli("simplify", src, "--checkpoint", simple_cnn_ckpt, "--arch", "simple_cnn", "--json")
    assert r.exit_code == 0, r
    report = r.json()
    assert report["model"]["input_shape"] == [3, 48, 40] and report["model"]["mean"] == [0.5, 0.5, 0.5]
    assert "pytorch" in {c["reference"] for c in report["artifacts"][0]["verification"]["checks"]}


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from exporter.cli import app; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    cli_path = Path(sys.executable).with_name("cnnexport")
    help_out = subprocess.run([str(cli_path), "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0
    for verb in ("onnx", "torchscript", "simplify", "verify", "inspect", "architectures", "demo"):
        assert verb in help_out.stdout
