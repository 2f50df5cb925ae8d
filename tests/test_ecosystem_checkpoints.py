"""Checkpoints written by the training tools people use, built here by those tools themselves.

torchvision's reference train.py is a script, not a package: its checkpoint is assembled as the
script does (argparse Namespace with its option names, torch's AveragedModel as its EMA, a real
optimizer and scheduler). timm's CheckpointSaver / ModelEmaV3 / save_for_hf, Lightning's Trainer
and transformers' save_pretrained write their files directly; those tests skip with the reason
where the library is not installed. Every exported artifact is run with onnxruntime and compared
with the original in-memory model, not only with what cnnexport loaded.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np
import pytest

from tests.conftest import build_model, calibrate_batchnorm, files_in
from tests.test_checkpoint_forms import _inspect
from tests.verdicts import verified


def _export(cli, path, out, *args) -> dict:
    """`cnnexport onnx` through the CLI; its own verification must pass."""
    r = cli("onnx", path, "-o", out, "--json", *args)
    assert r.exit_code == 0, r
    report = r.json()
    assert verified(report["artifacts"][0]["verification"]), report["artifacts"][0]["verification"]
    return report


def _onnx_vs_original(onnx_path, forward, shape, seed: int = 0, output: int = 0) -> float:
    """Max |onnx - original| / original range of one output (the first by default) on a seeded batch of 2."""
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(seed).standard_normal((2, *shape)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[output]
    with torch.no_grad():
        want = forward(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / (np.ptp(want) + 1e-12))


def _perturbed_copy(model, seed: int = 1):
    """The same network with every weight moved: what an EMA differs by after training steps."""
    import copy

    import torch

    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05 * (p.abs().mean() + 1e-3))
    return other


# --------------------------------------------------------------------------- torchvision references/classification/train.py


def _torchvision_reference_args(**overrides) -> argparse.Namespace:
    """The options of torchvision's train.py that describe the model and its evaluation input."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data-path", default="/datasets01/imagenet_full_size/061417/")
    parser.add_argument("--output-dir", default=".")
    parser.add_argument("--lr", default=0.1, type=float)
    parser.add_argument("--model-ema", action="store_true")
    parser.add_argument("--model-ema-decay", type=float, default=0.99998)
    parser.add_argument("--interpolation", default="bilinear")
    parser.add_argument("--val-resize-size", default=256, type=int)
    parser.add_argument("--val-crop-size", default=224, type=int)
    parser.add_argument("--train-crop-size", default=224, type=int)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.fixture(scope="module")
def torchvision_reference(tmp_path_factory):
    """(checkpoint path, model, ema module) as torchvision's train.py saves them with --model-ema."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = build_model("mobilenet_v3_small", num_classes=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    ema.update_parameters(_perturbed_copy(model))  # the EMA now differs from the model
    ema.eval()
    args = _torchvision_reference_args(
        model="mobilenet_v3_small", model_ema=True, val_resize_size=232, output_dir=pathlib.PurePosixPath("runs/mnv3")
    )
    path = tmp_path_factory.mktemp("tv") / "checkpoint.pth"  # train.py's own file name: no name hint
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": 3,
            "args": args,
            "model_ema": ema.state_dict(),
        },
        path,
    )
    return path, model, ema.module


def test_torchvision_reference_checkpoint_loads_without_flags(cli, torchvision_reference):
    path, model, _ = torchvision_reference
    info = _inspect(cli, path)
    assert info["arch"] == "mobilenet_v3_small"
    assert info["arch_source"] == "args.model"
    assert info["written_by"] == "torchvision references train.py"
    assert info["weights"] == "model" and info["checkpoint_form"] == "training-dict[model]"
    assert info["num_classes"] == 5
    assert info["input_shape"] == [3, 224, 224]
    assert info["interpolation"] == "bilinear" and info["crop_pct"] == pytest.approx(224 / 232, abs=1e-4)
    assert any("--weights ema" in n for n in info["notes"])  # the EMA is there, unused, and the note says how


def test_torchvision_reference_model_and_ema_weights_export(cli, torchvision_reference, tmp_path):
    path, model, ema = torchvision_reference
    report = _export(cli, path, tmp_path / "model.onnx")
    assert report["model"]["weights"] == "model"
    assert _onnx_vs_original(tmp_path / "model.onnx", model, (3, 224, 224)) < 1e-4

    report = _export(cli, path, tmp_path / "ema.onnx", "--weights", "ema")
    assert report["model"]["weights"] == "ema"
    assert _onnx_vs_original(tmp_path / "ema.onnx", ema, (3, 224, 224)) < 1e-4
    # the option changes the artifact: the model's weights are not the EMA's
    assert _onnx_vs_original(tmp_path / "ema.onnx", model, (3, 224, 224)) > 1e-3


def test_weights_option_names_what_is_missing(cli, tmp_path):
    import torch

    path = tmp_path / "no_ema.pth"
    torch.save({"model": build_model("simple_cnn").state_dict(), "epoch": 1}, path)
    r = cli("inspect", path, "--weights", "ema")
    assert r.exit_code == 2 and "no EMA weights" in r.stderr and "Traceback" not in r.stderr
    only_ema = tmp_path / "only_ema.pth"
    torch.save({"state_dict_ema": build_model("simple_cnn").state_dict(), "epoch": 1}, only_ema)
    r = cli("inspect", only_ema, "--arch", "simple_cnn")
    assert r.exit_code == 2 and "only EMA weights" in r.stderr and "--weights ema" in r.stderr
    assert _inspect(cli, only_ema, "--arch", "simple_cnn", "--weights", "ema")["weights"] == "ema"


# --------------------------------------------------------------------------- harmless and hostile objects beside the weights


def test_numpy_scalars_arrays_and_paths_load_under_weights_only(cli, tmp_path):
    import torch

    model = build_model("simple_cnn")
    path = tmp_path / "best.pt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "arch": "simple_cnn",
            "best_acc": np.float64(0.913),
            "epoch": np.int64(12),
            "history": np.array([0.5, 0.7, 0.913]),
            "dtype": np.dtype("float32"),
            "flag": np.bool_(True),
            "run_dir": pathlib.Path("runs") / "exp1",
            "win_dir": pathlib.PureWindowsPath(r"C:\\runs\\exp1"),
        },
        path,
    )
    info = _inspect(cli, path)
    assert info["arch"] == "simple_cnn" and info["num_classes"] == 10


class _Payload:
    """Unpickling this runs `touch MARKER`: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["namespace", "hyper_parameters", "numpy-object-array", "nested-list"])
def test_hostile_object_inside_an_allowed_container_is_refused(cli, tmp_path, where):
    import torch

    marker = tmp_path / "PWNED"
    payload = _Payload(marker)
    obj = {"state_dict": build_model("simple_cnn").state_dict(), "epoch": 1}
    if where == "namespace":
        obj["args"] = _torchvision_reference_args(model="simple_cnn", output_dir=payload)
    elif where == "hyper_parameters":
        obj["hyper_parameters"] = {"arch": "simple_cnn", "loss": payload}
        obj["pytorch-lightning_version"] = "2.6.6"
    elif where == "numpy-object-array":
        obj["history"] = np.array([1.0, payload], dtype=object)
    else:
        obj["args"] = argparse.Namespace(schedule=[1, {"x": (payload,)}])
    path = tmp_path / "hostile.pt"
    torch.save(obj, path)
    r = cli("inspect", path)
    assert r.exit_code == 2, r
    assert "contains pickled Python objects" in r.stderr and "system" in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists()  # the payload never ran


# --------------------------------------------------------------------------- timm


@pytest.fixture(scope="module")
def timm_module():
    return pytest.importorskip("timm", reason="timm is not installed (pip install 'cnnexport[timm]')")


def _timm_model(timm_module, name: str, **kwargs):
    import torch

    torch.manual_seed(0)
    model = timm_module.create_model(name, pretrained=False, **kwargs)
    cfg = model.pretrained_cfg
    from exporter.spec import ModelSpec

    _, h, w = cfg["input_size"]
    c = kwargs.get("in_chans", 3)
    spec = ModelSpec(name, kwargs.get("num_classes", 1000), c, h, w, mean=(0.5,) * c, std=(0.5,) * c)
    return calibrate_batchnorm(model, spec)


@pytest.fixture(scope="module")
def timm_train_checkpoint(timm_module, tmp_path_factory):
    """timm's own CheckpointSaver with a ModelEmaV3, as timm's train.py uses them."""
    import torch
    from timm.utils import CheckpointSaver, ModelEmaV3

    model = _timm_model(timm_module, "mobilenetv3_small_050", num_classes=6)
    ema = ModelEmaV3(model, decay=0.5)
    ema.update(_perturbed_copy(model), step=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = argparse.Namespace(
        model="mobilenetv3_small_050",
        num_classes=6,
        img_size=None,
        input_size=None,
        mean=None,
        std=None,
        interpolation="",
        crop_pct=None,
        lr=1e-3,
        epochs=1,
        output="runs",
    )
    folder = tmp_path_factory.mktemp("timm_train")
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(folder), recovery_dir=str(folder))
    saver.save_checkpoint(epoch=0, metric=0.5)
    path = folder / "model_best.pth.tar"
    assert path.is_file(), sorted(p.name for p in folder.iterdir())
    return path, model, ema.module


def test_timm_train_checkpoint_loads_by_its_timm_name(cli, timm_train_checkpoint, tmp_path):
    path, model, ema = timm_train_checkpoint
    info = _inspect(cli, path)
    assert info["arch"] == "timm:mobilenetv3_small_050"
    assert info["arch_source"] == "timm train.py args.model"
    assert info["written_by"] == "timm train.py"
    assert info["num_classes"] == 6
    assert info["interpolation"] == "bicubic"  # timm's pretrained_cfg default for the model
    _export(cli, path, tmp_path / "m.onnx")
    assert _onnx_vs_original(tmp_path / "m.onnx", model, (3, 224, 224)) < 1e-4
    report = _export(cli, path, tmp_path / "ema.onnx", "--weights", "ema")
    assert report["model"]["weights"] == "ema" and report["model"]["checkpoint_form"] == "training-dict[state_dict_ema]"
    assert _onnx_vs_original(tmp_path / "ema.onnx", ema, (3, 224, 224)) < 1e-4


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_timm_hub_folder(cli, timm_module, tmp_path, safe):
    from timm.models import save_for_hf

    model = _timm_model(timm_module, "resnet10t", num_classes=4, in_chans=1)
    folder = tmp_path / "hub"
    save_for_hf(model, str(folder), model_config={"label_names": ["ant", "bee", "cat", "dog"]}, safe_serialization=safe)
    info = _inspect(cli, folder)
    assert info["arch"] == "timm:resnet10t" and info["arch_source"] == "config.json architecture"
    assert info["checkpoint_form"] == f"timm hub folder ({'model.safetensors' if safe else 'pytorch_model.bin'})"
    assert info["labels"] == ["ant", "bee", "cat", "dog"]
    cfg = model.pretrained_cfg
    shape = (1, *cfg["input_size"][1:])  # save_for_hf writes the 1-channel input size and mean/std
    assert info["input_shape"] == list(shape)
    assert info["mean"] == pytest.approx([float(np.mean(cfg["mean"]))], abs=1e-3) and info["crop_pct"] == pytest.approx(
        cfg["crop_pct"]
    )
    out = tmp_path / "out" / "hub.onnx"
    _export(cli, folder, out)
    assert _onnx_vs_original(out, model, shape) < 1e-4


def test_timm_registry_names_and_listing(cli, timm_module):
    from exporter import architectures

    assert architectures.get("resnet18").source == "torchvision"  # the bare shared name stays torchvision's
    assert architectures.get("timm:resnet18").source == "timm"
    assert architectures.get("timm/resnet50.a1_in1k").name == "timm:resnet50"  # a Hub id names the architecture
    assert architectures.get("resnet50d").name == "timm:resnet50d"  # only timm has it: no prefix needed
    spec = architectures.get("timm:inception_v3").spec()
    assert spec.input_shape == (3, 299, 299) and spec.interpolation == "bicubic" and spec.crop_pct == 0.875
    r = cli("architectures", "--source", "timm", "--json")
    assert r.exit_code == 0, r
    rows = {row["name"]: row for row in r.json()}
    assert len(rows) == len(timm_module.list_models())
    assert rows["timm:efficientnet_b3"]["input_shape"] == list(timm_module.get_pretrained_cfg("efficientnet_b3").input_size)


def test_timm_only_name_as_arch(cli, timm_module, tmp_path):
    import torch

    model = _timm_model(timm_module, "ghostnet_050", num_classes=3)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    info = _inspect(cli, path, "--arch", "ghostnet_050")
    assert info["arch"] == "timm:ghostnet_050" and info["num_classes"] == 3


# --------------------------------------------------------------------------- Lightning


@pytest.fixture(scope="module")
def lightning_checkpoints(tmp_path_factory):
    """Two real Lightning .ckpt files: hyper_parameters naming the arch, and not naming it."""
    pl = pytest.importorskip("pytorch_lightning", reason="pytorch-lightning is not installed (it is in the test extra)")
    import torch
    import torchvision
    from torch.utils.data import DataLoader, TensorDataset

    class Classifier(pl.LightningModule):
        def __init__(self, arch: str = "mobilenet_v3_small", num_classes: int = 4, lr: float = 0.01, name_it: bool = True):
            super().__init__()
            self.save_hyperparameters() if name_it else self.save_hyperparameters("num_classes", "lr")
            self.model = torchvision.models.get_model(arch, num_classes=num_classes)
            self.criterion = torch.nn.CrossEntropyLoss(weight=torch.ones(num_classes))  # a buffer beside the network

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, _):
            x, y = batch
            return self.criterion(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    folder = tmp_path_factory.mktemp("lightning")
    data = TensorDataset(torch.randn(8, 3, 64, 64), torch.randint(0, 4, (8,)))
    made = {}
    for name_it in (True, False):
        torch.manual_seed(0)
        module = Classifier(name_it=name_it)
        trainer = pl.Trainer(
            max_steps=2,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=str(folder),
        )
        trainer.fit(module, DataLoader(data, batch_size=4))
        path = folder / ("named" if name_it else "unnamed") / "epoch=0-step=2.ckpt"  # Lightning's own file name
        path.parent.mkdir()
        trainer.save_checkpoint(str(path))
        made[name_it] = (path, module.eval())
    return made


def test_lightning_checkpoint_named_in_hyper_parameters(cli, lightning_checkpoints, tmp_path):
    path, module = lightning_checkpoints[True]
    report = _export(cli, path, tmp_path / "lit.onnx")
    model = report["model"]
    assert model["arch"] == "mobilenet_v3_small" and model["arch_source"] == "hyper_parameters.arch"
    assert model["weights_prefix"] == "model." and model["left_out_keys"] == ["criterion.weight"]
    assert model["written_by"].startswith("Lightning ")
    assert model["num_classes"] == 4
    assert _onnx_vs_original(tmp_path / "lit.onnx", module, (3, 224, 224)) < 1e-4


def test_lightning_checkpoint_with_arch_and_inferred(cli, lightning_checkpoints):
    path, module = lightning_checkpoints[False]
    info = _inspect(cli, path, "--arch", "mobilenet_v3_small")
    assert info["arch"] == "mobilenet_v3_small" and info["weights_prefix"] == "model."
    info = _inspect(cli, path)  # nothing names it: keys and shapes under the prefix do
    assert info["arch"] == "mobilenet_v3_small"
    assert info["arch_source"] == "inferred from keys and shapes under prefix 'model.'"
    assert info["left_out_keys"] == ["criterion.weight"]
    # the prefix can be named too
    assert _inspect(cli, path, "--weights", "model.")["weights"] == "model."


# --------------------------------------------------------------------------- transformers


def _transformers():
    return pytest.importorskip("transformers", reason="transformers is not installed (pip install 'cnnexport[transformers]')")


def _small_transformers_classifiers(t):
    labels = {0: "cat", 1: "dog", 2: "fish"}
    return {
        "resnet": t.ResNetForImageClassification(
            t.ResNetConfig(
                embedding_size=16,
                hidden_sizes=[16, 32],
                depths=[1, 1],
                layer_type="basic",
                id2label=labels,
                label2id={v: k for k, v in labels.items()},
            )
        ),
        "convnext": t.ConvNextForImageClassification(
            t.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=4, image_size=64)
        ),
        "mobilenet_v2": t.MobileNetV2ForImageClassification(
            t.MobileNetV2Config(depth_multiplier=0.35, num_labels=5, image_size=96)
        ),
        "regnet": t.RegNetForImageClassification(
            t.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, num_labels=3)
        ),
    }


@pytest.mark.parametrize(
    "family", ["resnet", *(pytest.param(f, marks=pytest.mark.full) for f in ("convnext", "mobilenet_v2", "regnet"))]
)
def test_transformers_image_classifier_folder(cli, tmp_path, family):
    import torch

    t = _transformers()
    t.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    model = _small_transformers_classifiers(t)[family].eval()
    folder = tmp_path / family
    model.save_pretrained(str(folder))
    if family == "convnext":  # an image processor saved beside it gives the input spec
        t.ConvNextImageProcessor(
            size={"shortest_edge": 64}, crop_pct=0.875, image_mean=[0.5] * 3, image_std=[0.25] * 3
        ).save_pretrained(str(folder))
    out = tmp_path / "out" / f"{family}.onnx"
    report = _export(cli, folder, out)
    info = report["model"]
    assert info["arch"] == type(model).__name__ and info["arch_source"] == "config.json architectures"
    assert info["num_classes"] == model.config.num_labels
    size = {"convnext": 64, "mobilenet_v2": 96}.get(family, 224)
    assert info["input_shape"] == [3, size, size]
    if family == "resnet":
        assert info["labels"] == ["cat", "dog", "fish"]
    else:
        assert info["labels"] is None  # transformers' LABEL_0 … placeholders are not labels
    if family == "convnext":
        assert info["mean"] == [0.5] * 3 and info["std"] == [0.25] * 3 and info["crop_pct"] == 0.875
    assert files_in(out.parent) == {out.name, out.name + ".report.json"}
    assert _onnx_vs_original(out, lambda x: model(pixel_values=x).logits, (3, size, size)) < 1e-4


def test_transformers_folder_exports_without_library_noise_in_a_fresh_process(tmp_path):
    """Issue 43: torch's `_pytree.py:630 ... is an Enum subclass` lines printed before the first line of an
    export from a Hugging Face folder; library log lines go to the terminal only with -v."""
    import subprocess
    import sys

    import torch

    t = _transformers()
    torch.manual_seed(0)
    folder = tmp_path / "resnet"
    _small_transformers_classifiers(t)["resnet"].save_pretrained(str(folder))
    command = [sys.executable, "-m", "exporter.cli", "onnx", str(folder)]
    plain = subprocess.run([*command, "-o", str(tmp_path / "plain.onnx")], capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr
    assert [line for line in plain.stderr.splitlines() if not line.startswith("• ")] == [], plain.stderr
    verbose = subprocess.run([*command, "-o", str(tmp_path / "verbose.onnx"), "-v"], capture_output=True, text=True, timeout=600)
    assert verbose.returncode == 0 and "_pytree" in verbose.stderr  # the lines exist: -v shows them


def test_transformers_folder_with_remote_code_is_refused(cli, tmp_path):
    import json

    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["MyNet"], "auto_map": {"AutoModel": "modeling.MyNet"}}))
    (folder / "model.safetensors").write_bytes(b"")
    r = cli("inspect", folder)
    assert r.exit_code == 2 and "remote code" in r.stderr and "Traceback" not in r.stderr


def test_folder_without_config_says_what_it_expects(cli, tmp_path):
    r = cli("inspect", tmp_path)
    assert r.exit_code == 2 and "config.json" in r.stderr


# --------------------------------------------------------------------------- ambiguity


def test_same_keys_different_function_is_never_guessed(cli, timm_module, tmp_path):
    """timm's efficientnet_b0 and tf_efficientnet_b0 share every key and shape; TF 'SAME' padding differs."""
    import torch

    model = _timm_model(timm_module, "efficientnet_b0", num_classes=3)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    r = cli("inspect", path)
    assert r.exit_code == 2, r
    assert "compute different functions" in r.stderr
    assert "timm:efficientnet_b0" in r.stderr and "timm:tf_efficientnet_b0" in r.stderr and "--arch" in r.stderr
    assert _inspect(cli, path, "--arch", "timm:efficientnet_b0")["arch"] == "timm:efficientnet_b0"


def test_same_keys_same_function_picks_the_builtin_and_says_so(cli, timm_module, tmp_path):
    import torch

    state_dict = build_model("resnet18", num_classes=3).state_dict()
    # named after its architecture: torchvision's and timm's resnet18 both fit, and compute the same
    named = tmp_path / "resnet18_final.pt"
    torch.save(state_dict, named)
    info = _inspect(cli, named)
    assert info["arch"] == "resnet18"
    assert any("timm:resnet18" in n and "same outputs" in n for n in info["notes"])
    # unnamed: timm's resnetblur18 has the very same keys and shapes but blurs before striding
    unnamed = tmp_path / "weights.pt"
    torch.save(state_dict, unnamed)
    r = cli("inspect", unnamed)
    assert r.exit_code == 2 and "compute different functions" in r.stderr and "timm:resnetblur18" in r.stderr


# --------------------------------------------------------------------------- without the optional libraries


def test_timm_names_without_timm_exit_3_with_the_install_line(cli, monkeypatch, tmp_path):
    import torch

    from exporter import architectures
    from exporter.architectures import timm_models

    monkeypatch.setattr(timm_models, "available", lambda: False)
    monkeypatch.setattr(architectures, "_REGISTRY", {k: v for k, v in architectures._REGISTRY.items() if v.source != "timm"})
    monkeypatch.setattr(architectures, "_timm_loaded", False)
    path = tmp_path / "w.pt"
    torch.save(build_model("simple_cnn").state_dict(), path)
    r = cli("inspect", path, "--arch", "timm:resnet18")
    assert r.exit_code == 3 and "pip install 'cnnexport[timm]'" in r.stderr
    r = cli("architectures", "--source", "timm")
    assert r.exit_code == 3 and "pip install 'cnnexport[timm]'" in r.stderr
    assert _inspect(cli, path)["arch"] == "simple_cnn"  # inference still works on the built-in entries


def test_transformers_folder_without_transformers_exits_3(cli, monkeypatch, tmp_path):
    import json

    from exporter.sources import transformers

    monkeypatch.setattr(transformers, "transformers_available", lambda: False)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["ResNetForImageClassification"], "model_type": "resnet"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    r = cli("inspect", tmp_path)
    assert r.exit_code == 3 and "pip install 'cnnexport[transformers]'" in r.stderr


# --------------------------------------------------------------------------- the parts


def test_prefix_views_put_the_network_first():
    from exporter.loading.training_formats import prefix_views

    sd = {"model.conv.weight": 1, "model.fc.weight": 2, "model.fc.bias": 3, "criterion.weight": 4, "metric.a": 5, "metric.b": 6}
    views = prefix_views(sd)
    assert views[0] == ("model.", {"conv.weight": 1, "fc.weight": 2, "fc.bias": 3})
    assert ("metric.", {"a": 5, "b": 6}) in views
    assert all(p != "criterion." for p, _ in views)  # a single key is no network


def test_spec_hints_from_train_script_args():
    from exporter.sources import lightning, timm, torchvision_refs

    tv = torchvision_refs.hints(
        {
            "model": {},
            "args": _torchvision_reference_args(
                model="resnet50", val_crop_size=176, val_resize_size=232, interpolation="bicubic"
            ),
            "lr_scheduler": {},
        }
    )
    assert tv.names == [("resnet50", "args.model")]
    assert tv.spec == {"input_shape": (3, 176, 176), "crop_pct": round(176 / 232, 4), "interpolation": "bicubic"}
    timm_args = argparse.Namespace(
        model="convnext_atto",
        input_size=[3, 288, 288],
        mean=[0.5, 0.5, 0.5],
        std=None,
        num_classes=10,
        interpolation="",
        crop_pct=0.95,
    )
    t = timm.train_hints({"arch": "convnext_atto", "version": 2, "args": timm_args, "state_dict": {}})
    assert t.names == [("timm:convnext_atto", "timm train.py args.model")]
    assert t.spec == {"input_shape": (3, 288, 288), "mean": (0.5, 0.5, 0.5), "num_classes": 10, "crop_pct": 0.95}
    lit = lightning.hints({"hyper_parameters": {"backbone": "resnet18", "num_classes": 3, "lr": 0.1}, "state_dict": {}})
    assert lit.names == [("resnet18", "hyper_parameters.backbone")] and lit.spec == {"num_classes": 3}


def test_allowlist_is_exactly_the_harmless_types():
    from exporter.loading.safe_pickle import safe_globals

    names = {f"{g.__module__}.{g.__qualname__}" if not isinstance(g, tuple) else g[1] for g in safe_globals()}
    assert {
        "argparse.Namespace",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray._reconstruct",
    } <= names
    dangerous = ("os.", "posix.", "subprocess", "builtins.", "eval", "exec", "numpy.load", "pickle", "importlib", "torch.")
    assert not [n for n in names if n.startswith(dangerous)]


def test_recipe_takes_the_weights_choice(cli, torchvision_reference, tmp_path):
    path, _, ema = torchvision_reference
    recipe = tmp_path / "onnx-only.yaml"
    recipe.write_text("name: onnx-only\nstages:\n  onnx: {enabled: true}\n")
    out = tmp_path / "dist"
    r = cli("run", path, "--recipe", recipe, "-o", out, "--set", "model.weights=ema", "--json")
    assert r.exit_code == 0, r
    manifest = r.json()["manifest"]
    assert verified(manifest["stages"]["onnx"]["verification"])
    assert manifest["model"]["weights"] == "ema"
    onnx_file = next(out.rglob("*.onnx"))
    assert _onnx_vs_original(onnx_file, ema, (3, 224, 224)) < 1e-4


def test_timm_folder_cannot_make_timm_load_a_file_itself(cli, timm_module, tmp_path):
    import json

    from timm.models import save_for_hf

    folder = tmp_path / "hub"
    save_for_hf(_timm_model(timm_module, "lcnet_050", num_classes=2), str(folder), safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["checkpoint_path"] = str(tmp_path / "evil.pth")  # timm would torch.load it unrestricted
    (folder / "config.json").write_text(json.dumps(config))
    r = cli("inspect", folder)
    assert r.exit_code == 2 and "checkpoint_path" in r.stderr and "refused" in r.stderr


@pytest.mark.full
def test_lightning_module_around_a_timm_model_named_by_its_bare_timm_name(cli, timm_module, tmp_path):
    """hyper_parameters say 'efficientnet_b0' (timm's create_model name): torchvision's has other keys, timm's fits."""
    pl = pytest.importorskip("pytorch_lightning", reason="pytorch-lightning is not installed (it is in the test extra)")
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class TimmClassifier(pl.LightningModule):
        def __init__(self, backbone: str = "efficientnet_b0", num_classes: int = 3):
            super().__init__()
            self.save_hyperparameters()
            self.net = timm_module.create_model(backbone, pretrained=False, num_classes=num_classes)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    module = TimmClassifier()
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(8, 3, 64, 64), torch.randint(0, 3, (8,))), batch_size=4))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(str(path))
    report = _export(cli, path, tmp_path / "eff.onnx")
    assert report["model"]["arch"] == "timm:efficientnet_b0" and report["model"]["weights_prefix"] == "net."
    assert report["model"]["arch_source"] == "hyper_parameters.backbone"
    assert _onnx_vs_original(tmp_path / "eff.onnx", module.eval(), (3, 224, 224)) < 1e-4
