"""Dense models nobody here wrote: torchvision's segmentation models by registry name and inferred
from their keys, segmentation_models_pytorch from its own save_pretrained folder and as state_dicts,
transformers' SegFormer from its save_pretrained folder, timm's features_only backbones."""

from __future__ import annotations

import pytest

from tests.verdicts import verified


def _verification(result) -> dict:
    assert result.exit_code == 0, result
    return result.json()["artifacts"][-1]["verification"]


def test_lraspp_is_inferred_from_its_keys_with_its_class_count(cli, tmp_path):
    import torch
    import torchvision

    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    torch.save(model.state_dict(), tmp_path / "seg_model.pt")
    result = cli("onnx", tmp_path / "seg_model.pt", "--input-shape", "3,64,64", "-o", tmp_path / "lraspp.onnx", "--json", "-q")
    v = _verification(result)
    report = result.json()
    assert report["model"]["arch"] == "lraspp_mobilenet_v3_large" and "inferred" in report["model"]["arch_source"]
    assert report["model"]["num_classes"] == 4  # the class axis, not the 64-pixel width
    assert verified(v) and list(v["outputs"]) == ["out"]
    assert v["outputs"]["out"]["task"] == "segment" and v["outputs"]["out"]["pixel_agreement"] == 1.0


@pytest.mark.full
def test_deeplabv3_with_aux_head_exports_both_outputs_or_only_out(cli, tmp_path):
    import torch
    import torchvision

    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=True
    )
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "deeplab.pth")  # torchvision's train.py layout
    both = _verification(
        cli("onnx", tmp_path / "deeplab.pth", "--input-shape", "3,64,64", "-o", tmp_path / "both.onnx", "--json", "-q")
    )
    assert verified(both) and list(both["outputs"]) == ["out", "aux"]
    result = cli(
        "onnx", tmp_path / "deeplab.pth", "--arch", "deeplabv3_mobilenet_v3_large",
        "--arch-kwargs", '{"aux_loss": true, "num_classes": 3}', "--outputs", "out", "--input-shape", "3,64,64",
        "-o", tmp_path / "out.onnx", "--json", "-q",
    )  # fmt: skip
    only = _verification(result)
    assert verified(only) and list(only["outputs"]) == ["out"]
    assert result.json()["model"]["dropped_outputs"] == ["aux"]
    scripted = _verification(
        cli(
            "torchscript", tmp_path / "deeplab.pth", "--script", "--input-shape", "3,64,64", "-o", tmp_path / "deeplab.ts",
            "--json", "-q",
        )
    )  # fmt: skip
    assert verified(scripted) and list(scripted["outputs"]) == ["out", "aux"]  # the scripted dict, by key
    refused = cli(
        "torchscript", tmp_path / "deeplab.pth", "--script", "--outputs", "out", "--input-shape", "3,64,64",
        "-o", tmp_path / "x.ts",
    )  # fmt: skip
    assert refused.exit_code == 2 and "--script exports every output the model returns" in refused.stderr


SMP = [
    ("Unet", "resnet18", "folder"),
    ("FPN", "mobilenet_v2", "folder"),
    ("DeepLabV3Plus", "resnet18", "state_dict"),
    ("Unet", "mobilenet_v2", "state_dict"),
]


# the first variant is the required tier's; the others (another decoder, encoder, file form) are the full tier's
@pytest.mark.parametrize(
    "model_class,encoder,saved_as",
    [pytest.param(*case, id="-".join(case), marks=[] if i == 0 else [pytest.mark.full]) for i, case in enumerate(SMP)],
)
def test_segmentation_models_pytorch(cli, tmp_path, model_class, encoder, saved_as):
    smp = pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is a test extra")
    import json

    import torch

    torch.manual_seed(0)
    model = getattr(smp, model_class)(encoder_name=encoder, encoder_weights=None, classes=3)
    model.train()
    with torch.no_grad():  # BatchNorm statistics from data, as after training
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64))
    model.eval()
    if saved_as == "folder":
        model.save_pretrained(str(tmp_path / "smp_model"))
        source, arch = tmp_path / "smp_model", []
    else:
        torch.save(model.state_dict(), tmp_path / "smp.pt")
        source = tmp_path / "smp.pt"
        arch = [
            "--arch",
            f"segmentation_models_pytorch:{model_class}",
            "--arch-kwargs",
            json.dumps({"encoder_name": encoder, "encoder_weights": None, "classes": 3}),
        ]
    result = cli("onnx", source, *arch, "--input-shape", "3,64,64", "-o", tmp_path / "smp.onnx", "--json", "-q")
    v = _verification(result)
    assert verified(v)
    assert result.json()["model"]["num_classes"] == 3
    row = v["outputs"]["logits"]
    assert row["task"] == "segment" and row["pixel_agreement"] == 1.0 and row["miou"] >= 0.99


def test_transformers_segformer_folder_is_judged_as_a_segmenter(cli, tmp_path):
    """SegformerForSemanticSegmentation's logits are class maps at a quarter of the input size (issue 41)."""
    t = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'cnnexport[transformers]')")
    import torch

    from tests.test_ecosystem_checkpoints import _onnx_vs_original

    t.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    labels = {0: "road", 1: "car", 2: "sky"}
    config = t.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2],
        num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16, id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    model = t.SegformerForSemanticSegmentation(config).eval()
    folder = tmp_path / "segformer"
    model.save_pretrained(str(folder))
    t.SegformerImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(
        str(folder)
    )
    result = cli("onnx", folder, "-o", tmp_path / "segformer.onnx", "--json", "-q")
    v = _verification(result)
    info = result.json()["model"]
    assert info["arch"] == "SegformerForSemanticSegmentation" and info["arch_source"] == "config.json architectures"
    assert info["num_classes"] == 3 and info["labels"] == ["road", "car", "sky"]
    assert info["input_shape"] == [3, 64, 64] and info["mean"] == [0.5] * 3 and info["std"] == [0.25] * 3
    assert info["outputs"] == [{"name": "logits", "task": "segment", "classes": 3, "shape": [3, 16, 16]}]
    row = v["outputs"]["logits"]
    assert verified(v) and row["task"] == "segment" and row["pixel_agreement"] == 1.0 and row["miou"] >= 0.99
    assert _onnx_vs_original(tmp_path / "segformer.onnx", lambda x: model(pixel_values=x).logits, (3, 64, 64)) < 1e-4


# (timm name, out_indices, each feature map's shape at 64x64): timm's generic FeatureListNet, and a family's own
# feature class (MobileNetV3Features), which timm marks the same way (a FeatureInfo)
FEATURES = [
    ("resnet18", [1, 2, 3], [[64, 16, 16], [128, 8, 8], [256, 4, 4]]),
    ("lcnet_050", [2, 3, 4], [[64, 8, 8], [128, 4, 4], [256, 2, 2]]),
]


@pytest.mark.parametrize(
    "name,indices,shapes",
    [pytest.param(*case, id=case[0], marks=[] if i == 0 else [pytest.mark.full]) for i, case in enumerate(FEATURES)],
)
def test_timm_features_only_backbone_exports_its_feature_maps(cli, tmp_path, name, indices, shapes):
    """A features_only backbone returns feature maps: features outputs and no classes, not 64 'classes per pixel'."""
    timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'cnnexport[timm]')")
    import json

    import torch

    from tests.test_ecosystem_checkpoints import _onnx_vs_original

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, features_only=True, out_indices=indices).eval()
    torch.save(model.state_dict(), tmp_path / "backbone.pt")
    kwargs = json.dumps({"features_only": True, "out_indices": indices})
    result = cli(
        "onnx", tmp_path / "backbone.pt", "--arch", f"timm:{name}", "--arch-kwargs", kwargs, "--input-shape", "3,64,64",
        "-o", tmp_path / "backbone.onnx", "--json", "-q",
    )  # fmt: skip
    v = _verification(result)
    info = result.json()["model"]
    assert info["arch"] == f"timm:{name}" and info["num_classes"] == 0 and info["labels"] is None
    expected = [(str(i), "features", None, shape) for i, shape in enumerate(shapes)]
    assert [(o["name"], o["task"], o["classes"], o["shape"]) for o in info["outputs"]] == expected
    assert verified(v) and {n: row["task"] for n, row in v["outputs"].items()} == {str(i): "features" for i in range(3)}
    for index in range(3):  # every feature map of the artifact against the original backbone's
        error = _onnx_vs_original(tmp_path / "backbone.onnx", lambda x, i=index: model(x)[i], (3, 64, 64), output=index)
        assert error < 1e-4
    # the same backbone pickled whole: recognised from what it is, whatever the file says
    torch.save(model, tmp_path / "whole.pt")
    r = cli("inspect", tmp_path / "whole.pt", "--trust-pickle", "--input-shape", "3,64,64", "--json")
    assert r.exit_code == 0, r
    assert r.json()["num_classes"] == 0 and [o["task"] for o in r.json()["outputs"]] == ["features"] * 3
