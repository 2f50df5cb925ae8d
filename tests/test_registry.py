import pytest

from exporter import architectures
from exporter.architectures import ArchEntry

CLASSIC = {
    "lenet5": (1, 32, 32),
    "lenet_mnist": (1, 28, 28),
    "mobilenet_v1": (3, 224, 224),
    "cifar_resnet18": (3, 32, 32),
    "cifar_resnet34": (3, 32, 32),
    "simple_cnn": (3, 32, 32),
}


def test_registry_holds_every_torchvision_classifier_and_the_classics():
    import torchvision

    tv = set(torchvision.models.list_models(module=torchvision.models))
    segmentation = set(torchvision.models.list_models(module=torchvision.models.segmentation))
    names = set(architectures.names())
    assert tv <= names and segmentation <= names
    assert {"fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"} <= segmentation
    assert set(CLASSIC) <= names
    assert len(names) == len(tv) + len(segmentation) + len(CLASSIC) + 1  # + tiny_unet
    assert {architectures.get(n).task for n in segmentation} == {"segment"}


@pytest.mark.parametrize("name,shape", sorted(CLASSIC.items()))
def test_classic_models_run_at_their_default_spec(name, shape):
    import torch

    entry = architectures.get(name)
    assert entry.spec().input_shape == shape
    model = entry.build(num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *shape))
    assert tuple(out.shape) == (2, 7)


def test_tiny_unet_returns_class_maps_at_its_default_spec():
    import torch

    entry = architectures.get("tiny_unet")
    assert entry.task == "segment" and entry.spec().input_shape == (3, 48, 48)
    with torch.no_grad():
        out = entry.build(num_classes=7).eval()(torch.zeros(2, 3, 48, 48))
    assert tuple(out.shape) == (2, 7, 48, 48)


def test_lenet_variants_differ_in_what_they_compute():
    import torch

    lenet5 = architectures.get("lenet5").build()
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in lenet5.modules())
    mnist = architectures.get("lenet_mnist").build()
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in mnist.modules())
    # same parameter shapes, different key names: that is what lets inference tell them apart
    assert set(lenet5.state_dict()) != set(mnist.state_dict())


def test_every_entry_builds_without_weights_and_signatures_are_unique():
    from exporter.loading.arch_inference import shape_signature

    signatures = {e.name: shape_signature(e) for e in architectures.entries()}
    assert [n for n, sig in signatures.items() if not sig] == []
    # inference may stop at the first exact match only because no two entries look alike
    frozen = {}
    for name, sig in signatures.items():
        key = tuple(sorted(sig.items()))
        assert key not in frozen, f"{name} and {frozen[key]} have identical state_dicts"
        frozen[key] = name


def test_file_name_hint_picks_the_longest_registry_name():
    from exporter.loading.arch_inference import name_hint

    entries = architectures.entries()
    assert name_hint("resnet18_best", entries).name == "resnet18"
    assert name_hint("resnet101", entries).name == "resnet101"
    assert name_hint("efficientnet_b0-final", entries).name == "efficientnet_b0"
    assert name_hint("my_model", entries) is None


def test_duplicate_registration_is_refused():
    entry = architectures.get("lenet5")
    with pytest.raises(ValueError, match="already registered"):
        architectures.register(ArchEntry("lenet5", entry.builder, 10))


def test_special_input_sizes():
    assert architectures.get("inception_v3").spec().input_shape == (3, 299, 299)
    assert architectures.get("resnet18").spec().input_shape == (3, 224, 224)


def test_architectures_command_lists_everything(cli):
    r = cli("architectures", "--json")
    assert r.exit_code == 0, r
    rows = {row["name"]: row for row in r.json()}
    assert rows["lenet5"]["input_shape"] == [1, 32, 32] and rows["lenet5"]["source"] == "classic"
    assert rows["resnet18"]["num_classes"] == 1000
    table = cli("architectures", "--source", "classic")
    assert table.exit_code == 0 and "cifar_resnet34" in table.stdout and "resnet50" not in table.stdout


def test_the_shipped_timm_fingerprints_are_what_timm_builds_here():
    """The package's index for this timm/torch matches fresh builds (a sample), so inference can trust it."""
    import random

    pytest.importorskip("timm", reason="timm is not installed (pip install 'cnnexport[timm]')")
    from exporter.loading.arch_inference import _shipped, key_fingerprint, shape_signature, shipped_fingerprints_name

    shipped = _shipped("timm")
    if not shipped:
        pytest.skip(f"no {shipped_fingerprints_name('timm')} ships for this timm/torch (scripts/timm-fingerprints.py)")
    timm_names = {e.name for e in architectures.entries(include_timm=True) if e.source == "timm"}
    assert set(shipped) == timm_names
    for name in random.Random(0).sample(sorted(shipped), 6) + ["timm:resnet18", "timm:mobilenetv3_small_050"]:
        signature = shape_signature(architectures.get(name))
        assert shipped[name] == (None if signature is None else key_fingerprint(signature)), name


def test_a_fresh_cache_starts_from_the_shipped_index_and_builds_nothing(tmp_path, monkeypatch):
    pytest.importorskip("timm", reason="timm is not installed (pip install 'cnnexport[timm]')")
    from exporter.loading import arch_inference

    if not arch_inference._shipped("timm"):
        pytest.skip("no timm index ships for this timm/torch (scripts/timm-fingerprints.py)")
    monkeypatch.setenv("CNNEXPORT_CACHE", str(tmp_path))
    monkeypatch.setattr(arch_inference, "_READ", {})
    built = []
    monkeypatch.setattr(arch_inference, "shape_signature", lambda entry, *a: built.append(entry.name))
    timm_entries = [e for e in architectures.entries(include_timm=True) if e.source == "timm"]
    prints = arch_inference.registry_fingerprints(timm_entries)
    assert built == [] and len(prints) == len(timm_entries)
    assert prints["timm:resnet18"] == arch_inference._shipped("timm")["timm:resnet18"]
