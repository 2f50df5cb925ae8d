"""`cnnexport coreml` end to end: convert with coremltools, verify with the MIL interpreter on Linux."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build_model, files_in
from tests.verdicts import verified

pytest.importorskip("coremltools")

# The four bigger torchvision models take 30-70 s each on a 2-core CPU (conversion + interpreting
# fp32 and fp16 programs); they run with CNNEXPORT_FULL=1 (CI's default suite covers LeNet-5,
# simple_cnn, resnet18 and mobilenet_v2; benchmarks/coreml_coverage.py covers the registry).
slow = [pytest.mark.full]


def _ckpt(models_dir: Path, name: str, num_classes: int = 10) -> Path:
    import torch

    path = models_dir / f"{name}_coreml.pt"
    if not path.exists():
        torch.save({"arch": name, "model_state_dict": build_model(name, num_classes=num_classes).state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def lenet_pkg(models_dir, lenet5_ckpt):
    """LeNet-5 (7 classes) as an fp32 ML program, exported once."""
    from exporter import export_artifact, load_checkpoint

    out = models_dir / "coreml" / "lenet5.mlpackage"
    result = export_artifact("coreml", load_checkpoint(lenet5_ckpt), out, {"precision": "fp32"})
    assert result.verification.status == "pass", result.verification.reason
    return out


def _spec(pkg: Path):
    from exporter.targets.coreml.mil.package import MLPackage

    return MLPackage(pkg).spec


def _first_conv_weight_blob(pkg: Path) -> tuple[Path, int, int]:
    """(weight.bin, byte offset of the first rank-4 weight's data, its element size)."""
    from exporter.targets.coreml.mil.package import MLPackage

    package = MLPackage(pkg)
    fn = package.spec.mlProgram.functions["main"]
    for op in fn.block_specializations[fn.opset].operations:
        val = op.attributes.get("val") if op.type == "const" else None
        if val is not None and val.WhichOneof("value") == "blobFileValue" and val.type.tensorType.rank == 4:
            weight_file = package.weight_file(val.blobFileValue.fileName)
            _, code, _, data_offset = struct.unpack_from("<IIQQ", weight_file.data, val.blobFileValue.offset)
            return weight_file.path, data_offset, 2 if code == 1 else 4
    raise AssertionError("no rank-4 weight blob")


# ----------------------------------------------------------------- LeNet-5 and the verbs


def test_lenet5_fp32_package_matches_pytorch_and_carries_metadata(cli, lenet5_ckpt, tmp_path):
    out = tmp_path / "lenet.mlpackage"
    r = cli(
        "coreml", lenet5_ckpt, "-o", out, "--precision", "fp32", "--author", "Ada", "--license", "MIT", "--version", "1.2",
        "--description", "digits", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][0]
    v = art["verification"]
    assert verified(v) and v["max_rel_err"] <= 1e-4 and v["batch_sizes"] == [1, 4]
    assert art["details"]["precision"] == "fp32" and art["details"]["batch"] == [1, 64]
    assert art["bytes"] > 200_000 and files_in(tmp_path) >= {"lenet.mlpackage", "lenet.mlpackage.report.json"}
    spec = _spec(out)
    meta = spec.description.metadata
    assert (meta.author, meta.license, meta.versionString, meta.shortDescription) == ("Ada", "MIT", "1.2", "digits")
    stored = json.loads(meta.userDefined["cnnexport.spec"])
    assert stored["arch"] == "lenet5" and stored["num_classes"] == 7 and stored["mean"] == [0.5]
    assert "normalized" in spec.description.input[0].shortDescription
    ranges = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges
    assert (ranges[0].lowerBound, ranges[0].upperBound) == (1, 64)
    assert spec.specificationVersion == 6  # iOS15


def test_the_same_model_exported_twice_is_the_same_bytes(lenet_pkg, lenet5_ckpt, tmp_path):
    """coremltools' random item ids are replaced: a rebuild's sha256 (what manifests and the run cache hold) repeats."""
    import coremltools as ct

    from exporter import export_artifact, load_checkpoint
    from exporter.fsutil import sha256_of

    again = tmp_path / "lenet5.mlpackage"
    export_artifact("coreml", load_checkpoint(lenet5_ckpt), again, {"precision": "fp32"})
    assert sha256_of(again) == sha256_of(lenet_pkg)
    manifest = json.loads((again / "Manifest.json").read_text())
    assert manifest["rootModelIdentifier"] in manifest["itemInfoEntries"]
    assert ct.models.MLModel(str(again), skip_model_load=True).get_spec().description.input[0].name


def test_packages_made_under_other_hash_seeds_are_the_same_bytes(lenet5_ckpt, tmp_path):
    """coremltools writes protobuf maps (metadata, op attributes) in hash order: the spec is rewritten in key order."""
    import os
    import subprocess
    import sys

    from exporter.fsutil import sha256_of

    digests = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}.mlpackage"
        command = [sys.executable, "-m", "exporter.cli", "coreml", str(lenet5_ckpt), "-o", str(out), "--no-verify", "-q"]
        done = subprocess.run(command, env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.append(sha256_of(out))
    assert digests[0] == digests[1]
    from exporter.targets.coreml.package import CONVERSION_DATE

    assert CONVERSION_DATE not in _spec(out).description.metadata.userDefined  # no day of conversion in the bytes


def test_manifest_entries_in_any_order_are_written_the_same(tmp_path):
    """coremltools' Manifest.json lists its items in a dict order that varies run to run (issue 39): written sorted."""
    from exporter.targets.coreml.package import reproducible_package

    items = {
        "A-1": {"path": "com.apple.CoreML/model.mlmodel", "author": "com.apple.CoreML", "name": "model.mlmodel"},
        "B-2": {"path": "com.apple.CoreML/weights", "author": "com.apple.CoreML", "name": "weights"},
    }
    written = []
    for order in (["A-1", "B-2"], ["B-2", "A-1"]):
        package = tmp_path / f"{order[0]}.mlpackage"
        package.mkdir()
        manifest = {
            "fileFormatVersion": "1.0.0",
            "rootModelIdentifier": "A-1",
            "itemInfoEntries": {key: items[key] for key in order},
        }
        (package / "Manifest.json").write_text(json.dumps(manifest))
        reproducible_package(package)
        written.append((package / "Manifest.json").read_bytes())
    assert written[0] == written[1]
    data = json.loads(written[0])
    assert data["itemInfoEntries"][data["rootModelIdentifier"]]["name"] == "model.mlmodel"


def test_fp16_program_rounds_like_fp16_and_passes_the_fp16_rule(cli, lenet5_ckpt, tmp_path):
    r = cli("coreml", lenet5_ckpt, "-o", tmp_path / "l16.mlpackage", "--json")
    assert r.exit_code == 0, r
    v = r.json()["artifacts"][0]["verification"]
    assert verified(v) and v["precision"] == "fp16" and v["top1_agreement"] == 1.0
    # fp16 rounding is visible: far above fp32 round-off, within the fp16 tolerance.
    assert 1e-5 < v["max_rel_err"] <= 1e-2
    from exporter.targets.coreml.mil_runner import MilRunner

    runner = MilRunner(tmp_path / "l16.mlpackage")
    assert runner.program.op_counts.get("cast") == 2  # fp32 input -> fp16 compute -> fp32 output
    # `cnnexport verify` judges the package by the precision it was exported with.
    again = cli("verify", tmp_path / "l16.mlpackage", "--checkpoint", lenet5_ckpt, "--json")
    assert again.exit_code == 0, again
    assert again.json()["artifacts"][0]["verification"]["precision"] == "fp16"


def test_verify_passes_the_package_and_fails_one_changed_weight_blob(cli, lenet_pkg, lenet5_ckpt, tmp_path):
    good = cli("verify", lenet_pkg, "--checkpoint", lenet5_ckpt, "--json")
    assert good.exit_code == 0, good
    assert good.json()["artifacts"][0]["kind"] == "coreml"
    assert verified(good.json()["artifacts"][0]["verification"])
    bad = tmp_path / "bad.mlpackage"
    shutil.copytree(lenet_pkg, bad)
    weights, offset, size = _first_conv_weight_blob(bad)
    data = bytearray(weights.read_bytes())
    value = np.frombuffer(bytes(data[offset : offset + size]), np.float32 if size == 4 else np.float16)[0]
    data[offset : offset + size] = np.asarray([value + 0.5], value.dtype).tobytes()
    weights.write_bytes(bytes(data))
    r = cli("verify", bad, "--checkpoint", lenet5_ckpt, "--json")
    assert r.exit_code == 1, r
    v = r.json()["artifacts"][0]["verification"]
    assert v["status"] == "fail" and v["max_rel_err"] > 1e-4


def test_an_unknown_op_is_skipped_never_pass(cli, lenet_pkg, lenet5_ckpt, tmp_path):
    pkg = tmp_path / "odd.mlpackage"
    shutil.copytree(lenet_pkg, pkg)
    from exporter.targets.coreml.mil.package import MLPackage

    package = MLPackage(pkg)
    fn = package.spec.mlProgram.functions["main"]
    op = next(o for o in fn.block_specializations[fn.opset].operations if o.type == "tanh")
    op.type = "fancy_tanh"
    package.model_path.write_bytes(package.spec.SerializeToString())
    r = cli("verify", pkg, "--checkpoint", lenet5_ckpt, "--json")
    v = r.json()["artifacts"][0]["verification"]
    assert v["status"] == "skipped" and v["reason"] == "unsupported op fancy_tanh", r
    assert r.exit_code == 0


def test_the_wrong_spec_in_the_package_metadata_fails(cli, lenet_pkg, lenet5_ckpt, tmp_path):
    pkg = tmp_path / "wrong.mlpackage"
    shutil.copytree(lenet_pkg, pkg)
    from exporter.targets.coreml.mil.package import MLPackage

    package = MLPackage(pkg)
    stored = json.loads(package.spec.description.metadata.userDefined["cnnexport.spec"])
    stored["std"] = [0.25]
    package.spec.description.metadata.userDefined["cnnexport.spec"] = json.dumps(stored)
    package.model_path.write_bytes(package.spec.SerializeToString())
    r = cli("verify", pkg, "--checkpoint", lenet5_ckpt)
    assert r.exit_code == 1 and "std" in r.stderr, r


def test_batch_range_fixed_batch_and_a_range_too_small(cli, lenet5_ckpt, tmp_path):
    r = cli("coreml", lenet5_ckpt, "-o", tmp_path / "r.mlpackage", "--batch", "2:3", "--precision", "fp32", "--json")
    assert r.exit_code == 0, r
    assert r.json()["artifacts"][0]["verification"]["batch_sizes"] == [2, 3]  # 1,4 clipped into 2:3
    from exporter.targets.coreml.mil_runner import MilRunner

    runner = MilRunner(tmp_path / "r.mlpackage")
    assert runner.batch_dim == "batch" and runner.batch_range == (2, 3)
    with pytest.raises(Exception, match="outside the package's batch range"):
        runner.infer(np.zeros((1, 1, 32, 32), np.float32))
    x = np.random.default_rng(0).standard_normal((7, 1, 32, 32)).astype(np.float32)
    chunked = runner.infer(x)["logits"]  # above the maximum: run as chunks of at most 3
    assert chunked.shape == (7, 7) and np.allclose(chunked[:3], runner.infer(x[:3])["logits"], atol=1e-6)
    r = cli("coreml", lenet5_ckpt, "-o", tmp_path / "f.mlpackage", "--batch", "1", "--precision", "fp32", "--json")
    assert r.exit_code == 0, r
    v = r.json()["artifacts"][0]["verification"]
    assert verified(v) and v["batch_sizes"] == [1]
    assert MilRunner(tmp_path / "f.mlpackage").batch_dim == 1
    for bad in ("0:4", "4:2", "x"):
        r = cli("coreml", lenet5_ckpt, "-o", tmp_path / "x.mlpackage", "--batch", bad)
        assert r.exit_code == 2 and "--batch" in r.stderr, r


def test_a_model_that_bakes_its_batch_fails_verification(cli, tmp_path):
    import sys

    import torch

    from tests.test_export_cli import BAKED_MODEL

    (tmp_path / "bakedml.py").write_text(BAKED_MODEL)
    sys.path.insert(0, str(tmp_path))
    try:
        from bakedml import BakedBatch
    finally:
        sys.path.pop(0)
    torch.save(BakedBatch().state_dict(), tmp_path / "b.pt")
    r = cli(
        "coreml", tmp_path / "b.pt", "--arch", f"{tmp_path / 'bakedml.py'}:BakedBatch", "--input-shape", "3,8,8",
        "--precision", "fp32", "-o", tmp_path / "out" / "b.mlpackage",
    )  # fmt: skip
    assert r.exit_code == 1, r
    assert "verification failed" in r.stderr
    assert not (tmp_path / "out" / "b.mlpackage").exists()


ADAPTIVE_MODEL = """
import torch
from torch import nn

class Pooled(nn.Module):
    def __init__(self, num_classes=5, pooled=2):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.fc = nn.Linear(4 * pooled * pooled, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
"""


@pytest.mark.parametrize("pooled", [2, 3])
def test_adaptive_pooling_and_the_flexible_batch(cli, tmp_path, pooled):
    import torch

    (tmp_path / f"pooled{pooled}.py").write_text(ADAPTIVE_MODEL)
    arch = f"{tmp_path / f'pooled{pooled}.py'}:Pooled"
    kwargs = json.dumps({"num_classes": 5, "pooled": pooled})
    import importlib.util

    module_spec = importlib.util.spec_from_file_location(f"pooled{pooled}", tmp_path / f"pooled{pooled}.py")
    mod = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(mod.Pooled(5, pooled).state_dict(), tmp_path / "p.pt")
    common = ["--arch", arch, "--arch-kwargs", kwargs, "--input-shape", "3,8,8", "--precision", "fp32"]
    r = cli("coreml", tmp_path / "p.pt", *common, "-o", tmp_path / "flex.mlpackage", "--json")
    if pooled == 2:
        # 8x8 -> 2x2 is a plain 4x4 average pool: swapped while tracing, so the batch stays flexible.
        assert r.exit_code == 0, r
        art = r.json()["artifacts"][0]
        assert art["details"]["adaptive_pools_as_fixed"] == 1 and art["verification"]["batch_sizes"] == [1, 4]
        assert art["verification"]["max_rel_err"] <= 1e-4
        assert isinstance(mod.Pooled(5, 2).pool, torch.nn.AdaptiveAvgPool2d)
    else:
        # 8x8 -> 3x3 has overlapping windows: coremltools needs a known input size; say what to do.
        assert r.exit_code == 2, r
        assert "flexible batch" in r.stderr and "--batch 1" in r.stderr
        r = cli("coreml", tmp_path / "p.pt", *common, "-o", tmp_path / "fixed.mlpackage", "--batch", "1", "--json")
        assert r.exit_code == 0, r
        assert r.json()["artifacts"][0]["verification"]["batch_sizes"] == [1]


SHUFFLE_MODEL = """
import torch
from torch import nn

class Shuffled(nn.Module):
    # ShuffleNetV2's channel shuffle: sizes read from the tensor, so tracing records int(size) casts
    def __init__(self, num_classes=6):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 1, groups=2)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        return self.fc(torch.flatten(self.conv2(x), 1))
"""


def _fp32_package_of_user_model(cli, tmp_path, source: str, cls: str) -> dict:
    """Save a seeded instance of ``cls`` from ``source`` and export it as an fp32 package; the artifact's report."""
    import importlib.util

    import torch

    module_file = tmp_path / f"{cls.lower()}.py"
    module_file.write_text(source)
    module_spec = importlib.util.spec_from_file_location(cls.lower(), module_file)
    mod = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(getattr(mod, cls)().state_dict(), tmp_path / "m.pt")
    r = cli(
        "coreml", tmp_path / "m.pt", "--arch", f"{module_file}:{cls}", "--input-shape", "3,8,8", "--precision", "fp32",
        "-o", tmp_path / "m.mlpackage", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    return r.json()["artifacts"][0]


def test_a_channel_shuffle_converts_despite_the_coremltools_numpy_cast_bug(cli, tmp_path):
    """coremltools 9.0 + NumPy 2.4 fail on int(size) casts; cnnexport's converter fix makes it convert and verify."""
    art = _fp32_package_of_user_model(cli, tmp_path, SHUFFLE_MODEL, "Shuffled")
    assert verified(art["verification"]) and art["verification"]["max_rel_err"] <= 1e-4
    assert art["details"]["ops"]["transpose"] >= 1


ALIASES_MODEL = """
import torch
from torch import nn

class Aliases(nn.Module):
    # Swin V2 zeroes a slice of a bias copy with zero_(); MaxViT calls torch.swapaxes
    def __init__(self, num_classes=6):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bias = nn.Parameter(torch.linspace(-1.0, 1.0, 6))
        self.fc = nn.Linear(6 * 8 * 8, num_classes)

    def forward(self, x):
        bias = self.bias.clone()
        bias[2:4].zero_()
        x = torch.relu(self.conv(x)) + bias.view(1, 6, 1, 1)
        x = torch.swapaxes(x, 2, 3).swapaxes(1, 3)
        return self.fc(torch.flatten(x, 1))
"""


def test_zero_and_swapaxes_convert_as_fill_and_transpose(cli, tmp_path):
    """coremltools lacks converters for aten::zero_ and aten::swapaxes;
    traced as fill_(0) and transpose they convert and verify."""
    import torch

    art = _fp32_package_of_user_model(cli, tmp_path, ALIASES_MODEL, "Aliases")
    assert verified(art["verification"]) and art["verification"]["max_rel_err"] <= 1e-4
    assert art["details"]["ops"]["transpose"] >= 1
    assert torch.swapaxes.__name__ == "swapaxes" and torch.Tensor.zero_.__name__ == "zero_"  # restored after tracing


ATTENTION_MODEL = """
import torch
from torch import nn

class Attention(nn.Module):
    # ViT's encoder block: nn.MultiheadAttention, which eval mode runs as one fused op
    def __init__(self, num_classes=6):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)
        t = t + self.attention(t, t, t, need_weights=False)[0]
        return self.fc(t.mean(1))
"""


def test_multi_head_attention_is_traced_as_plain_ops(cli, tmp_path):
    """eval-mode MHA becomes aten::_native_multi_head_attention, which coremltools lacks; cnnexport traces the slow path."""
    import torch

    art = _fp32_package_of_user_model(cli, tmp_path, ATTENTION_MODEL, "Attention")
    assert verified(art["verification"]) and art["verification"]["max_rel_err"] <= 1e-4
    assert art["details"]["ops"]["softmax"] >= 1
    assert torch.backends.mha.get_fastpath_enabled()  # restored after tracing
    r = cli(
        "onnx", tmp_path / "m.pt", "--arch", f"{tmp_path / 'attention.py'}:Attention", "--input-shape", "3,8,8",
        "--exporter", "legacy", "-o", tmp_path / "m.onnx", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert verified(r.json()["artifacts"][0]["verification"])


def test_bad_options_are_exit_2(cli, lenet5_ckpt, tmp_path):
    for args, words in (
        (["--compress", "palettize:5"], "palettize"),
        (["--compress", "zip"], "--compress"),
        (["--min-target", "iOS12"], "--min-target"),
        (["--compress", "linear8", "--min-target", "iOS15"], "iOS16"),
        (["--precision", "int4"], "precision"),
    ):
        r = cli("coreml", lenet5_ckpt, "-o", tmp_path / "x.mlpackage", *args)
        assert r.exit_code == 2 and words in (r.stderr + r.stdout), (args, r)
    r = cli("coreml", lenet5_ckpt, "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2 and ".mlpackage" in r.stderr, r


def test_a_failed_reexport_leaves_the_installed_package_untouched(cli, lenet5_ckpt, tmp_path):
    out = tmp_path / "keep.mlpackage"
    assert cli("coreml", lenet5_ckpt, "-o", out, "--precision", "fp32").exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # An impossible tolerance makes the second export fail verification: nothing may change.
    r = cli("coreml", lenet5_ckpt, "-o", out, "--precision", "fp32", "--max-rel-err", "1e-12")
    assert r.exit_code == 1, r
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cnnexport-tmp-")]
    # A passing re-export replaces it.
    r = cli("coreml", lenet5_ckpt, "-o", out, "--precision", "fp16")
    assert r.exit_code == 0, r
    assert _spec(out).description.metadata.userDefined["cnnexport.precision"] == "fp16"


# ----------------------------------------------------------------- image input, labels, classifier


def test_image_input_with_per_channel_std_classifier_and_labels(cli, simple_cnn_ckpt, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class_{i}" for i in range(10)) + "\n")
    out = tmp_path / "img.mlpackage"
    r = cli(
        "coreml", simple_cnn_ckpt, "-o", out, "--precision", "fp32", "--image-input", "--labels", labels, "--classifier", "--json"
    )
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][0]
    v = art["verification"]
    assert verified(v) and v["max_rel_err"] <= 1e-4, v
    d = art["details"]
    # CIFAR std differs per channel: Core ML's single image scale takes 1/255, the bias the mean,
    # and 1/std stays in the model as a per-channel multiply.
    assert d["image_scale"] == pytest.approx(1 / 255)
    assert d["image_bias"] == pytest.approx([-0.4914, -0.4822, -0.4465])
    assert d["in_model_std_multiplier"] == pytest.approx([1 / 0.247, 1 / 0.2435, 1 / 0.2616])
    spec = _spec(out)
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert spec.description.predictedFeatureName == "classLabel"
    assert list(spec.description.output[0].type.stringType.ListFields()) == []
    from exporter.targets.coreml.mil.package import MLPackage

    fn = MLPackage(out).spec.mlProgram.functions["main"]
    classify = next(o for o in fn.block_specializations[fn.opset].operations if o.type == "classify")
    assert "class_0" in str(classify)
    # The classifier's label is the label of the most probable class.
    from exporter.inputs import random_inputs
    from exporter.spec import ModelSpec
    from exporter.targets.coreml.mil_runner import MilRunner

    runner = MilRunner(out)
    x = random_inputs(ModelSpec.from_dict(runner.metadata), 3, 0).array
    outs = runner.infer(x)
    probs = outs["classLabel_probs"]
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert list(outs["classLabel"]) == [f"class_{i}" for i in probs.argmax(axis=1)]


def test_uniform_std_is_folded_into_the_image_scale(cli, lenet5_ckpt, tmp_path):
    r = cli("coreml", lenet5_ckpt, "-o", tmp_path / "g.mlpackage", "--precision", "fp32", "--image-input", "--json")
    assert r.exit_code == 0, r
    d = r.json()["artifacts"][0]["details"]
    assert d["image_scale"] == pytest.approx(1 / (255 * 0.5)) and d["image_bias"] == pytest.approx([-1.0])
    assert d["in_model_std_multiplier"] is None and d["color_layout"] == "GRAYSCALE"
    assert r.json()["artifacts"][0]["verification"]["max_rel_err"] <= 1e-4


def test_swapped_channel_order_of_the_image_input_fails(simple_cnn_ckpt, tmp_path):
    from exporter import export_artifact, load_checkpoint
    from exporter.pipeline import verify_existing
    from exporter.targets.coreml.stage import export as coreml_export

    loaded = load_checkpoint(simple_cnn_ckpt, arch="simple_cnn")
    # color_layout is the stage function's argument, not a user option: the layout follows the spec
    coreml_export(loaded, tmp_path, "bgr.mlpackage", precision="fp32", image_input=True, color_layout="BGR")
    v = verify_existing(tmp_path / "bgr.mlpackage", loaded, write=False).verification
    assert v.status == "fail" and v.to_dict()["max_rel_err"] > 1e-3, v.reason
    # The same model with the spec's RGB layout passes.
    assert (
        export_artifact(
            "coreml", loaded, tmp_path / "rgb.mlpackage", {"precision": "fp32", "image_input": True}
        ).verification.status
        == "pass"
    )


def test_weight_compression_palettize_and_linear8(cli, simple_cnn_ckpt, tmp_path):
    plain = cli("coreml", simple_cnn_ckpt, "-o", tmp_path / "plain.mlpackage", "--min-target", "iOS16", "--json")
    assert plain.exit_code == 0, plain
    plain_bytes = plain.json()["artifacts"][0]["bytes"]
    r = cli("coreml", simple_cnn_ckpt, "-o", tmp_path / "p4.mlpackage", "--compress", "palettize:4", "--json")
    assert r.exit_code == 0, r
    art = r.json()["artifacts"][0]
    assert art["details"]["compression"] == "palettize:4" and art["details"]["min_target"] == "iOS16"
    assert art["details"]["ops"]["constexpr_lut_to_dense"] >= 2
    assert art["verification"]["precision"] == "int8" and verified(art["verification"])
    assert art["verification"]["max_rel_err"] > 1e-3  # the 16-entry palettes really changed the weights
    assert art["bytes"] < 0.5 * plain_bytes  # 4-bit indices instead of fp16 weights
    assert _spec(tmp_path / "p4.mlpackage").description.metadata.userDefined["cnnexport.compression"] == "palettize:4"
    for target, op in (("iOS17", "constexpr_affine_dequantize"), ("iOS18", "constexpr_blockwise_shift_scale")):
        r = cli(
            "coreml", simple_cnn_ckpt, "-o", tmp_path / f"q8{target}.mlpackage", "--compress", "linear8", "--min-target", target,
            "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r
        art = r.json()["artifacts"][0]
        assert art["details"]["ops"][op] >= 2, art["details"]["ops"]
        assert verified(art["verification"]) and art["verification"]["cosine"] > 0.999
    r = cli(
        "coreml", simple_cnn_ckpt, "-o", tmp_path / "p18.mlpackage", "--compress", "palettize:6", "--min-target", "iOS18",
        "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert verified(r.json()["artifacts"][0]["verification"])


# ----------------------------------------------------------------- torchvision models


@pytest.mark.parametrize("name", ["resnet18", pytest.param("mobilenet_v2", marks=slow)])
def test_torchvision_models_fp32_and_fp16(name, models_dir, tmp_path):
    from exporter import VerifyOptions, export_artifact, load_checkpoint

    loaded = load_checkpoint(_ckpt(models_dir, name))
    fp32 = export_artifact(
        "coreml", loaded, tmp_path / f"{name}32.mlpackage", {"precision": "fp32"}, VerifyOptions(batch_sizes=(1, 3))
    )
    v = fp32.verification.to_dict()
    assert verified(v) and v["max_rel_err"] <= 1e-4, v
    fp16 = export_artifact(
        "coreml", loaded, tmp_path / f"{name}16.mlpackage", {}, VerifyOptions(batch_sizes=(4,), precision="fp16")
    )
    v = fp16.verification.to_dict()
    assert verified(v) and v["top1_agreement"] == 1.0 and v["max_rel_err"] <= 1e-2, v


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=slow) for n in ("mobilenet_v3_small", "efficientnet_b0", "densenet121", "convnext_tiny")]
)
def test_bigger_torchvision_models_fp32_and_fp16(name, models_dir, tmp_path):
    from exporter import VerifyOptions, export_artifact, load_checkpoint

    loaded = load_checkpoint(_ckpt(models_dir, name))
    fp32 = export_artifact(
        "coreml", loaded, tmp_path / f"{name}32.mlpackage", {"precision": "fp32"}, VerifyOptions(batch_sizes=(2,))
    )
    v = fp32.verification.to_dict()
    assert verified(v) and v["max_rel_err"] <= 1e-4, v
    fp16 = export_artifact(
        "coreml", loaded, tmp_path / f"{name}16.mlpackage", {}, VerifyOptions(batch_sizes=(2,), precision="fp16")
    )
    v = fp16.verification.to_dict()
    assert verified(v) and v["top1_agreement"] == 1.0, v


@pytest.mark.macos
@pytest.mark.skipif(__import__("platform").system() != "Darwin", reason="Core ML predict needs macOS")
def test_coreml_predict_agrees_with_the_interpreter_on_macos(lenet_pkg):
    from exporter.targets.coreml.mil_runner import MilRunner
    from exporter.targets.coreml.runner import CoreMLRunner

    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    ours, theirs = MilRunner(lenet_pkg).infer(x)["logits"], CoreMLRunner(lenet_pkg).infer(x)["logits"]
    assert np.abs(ours - theirs).max() <= 1e-3 * (theirs.max() - theirs.min())


def test_the_coreml_predict_runner_says_it_needs_macos(lenet_pkg):
    import platform

    from exporter.errors import BackendUnavailable
    from exporter.targets.coreml.runner import CoreMLRunner

    if platform.system() == "Darwin":
        pytest.skip("this machine is a Mac")
    with pytest.raises(BackendUnavailable, match="macOS"):
        CoreMLRunner(lenet_pkg)


ADDCMUL_NET = '''
import torch
from torch import nn

class Grn(nn.Module):
    """timm's ConvNeXt-V2 GlobalResponseNorm pattern: torch.addcmul, which coremltools cannot convert."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.weight = nn.Parameter(torch.full((1, 8, 1, 1), 0.5))
        self.bias = nn.Parameter(torch.full((1, 8, 1, 1), 0.1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        nx = x.norm(p=2, dim=(2, 3), keepdim=True) / 10
        x = torch.addcmul(self.bias, self.weight, x * nx) + x
        return self.fc(x.mean(dim=(2, 3)))
'''


def test_addcmul_models_convert_and_verify(cli, tmp_path):
    import torch

    from tests.conftest import user_model_class

    grn_class = user_model_class(tmp_path, ADDCMUL_NET, "grn", "Grn")
    torch.manual_seed(0)
    torch.save(grn_class().state_dict(), tmp_path / "grn.pt")
    r = cli(
        "coreml", tmp_path / "grn.pt", "--arch", f"{tmp_path / 'grn.py'}:Grn", "--input-shape", "3,16,16",
        "-o", tmp_path / "grn.mlpackage", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert verified(r.json()["artifacts"][0]["verification"])
