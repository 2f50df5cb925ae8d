"""Every checkpoint form people save, through the real CLI, with real files on disk.

Most cases use ``cnnexport inspect --json`` (a load + one forward pass); a few do a full,
verified ``cnnexport onnx`` export. Cases about something other than architecture inference
pass ``--arch`` to stay fast.
"""

from __future__ import annotations

import json
import sys
import textwrap
import uuid

import pytest

from tests.conftest import build_model, files_in
from tests.verdicts import verified

# --------------------------------------------------------------------------- helpers


def _inspect(cli, path, *args) -> dict:
    r = cli("inspect", path, "--json", *args)
    assert r.exit_code == 0, r
    assert "Traceback" not in r.stdout + r.stderr
    return r.json()


def _export_onnx(cli, path, out, *args) -> dict:
    r = cli("onnx", path, "-o", out, "--json", *args)
    assert r.exit_code == 0, r
    report = r.json()
    art = report["artifacts"][0]
    assert art["kind"] == "onnx"
    assert verified(art["verification"]), art["verification"]
    assert art["verification"]["batch_sizes"] == [1, 4]
    assert files_in(out.parent) == {out.name, out.name + ".report.json"}
    return report


def _n_params(state_dict) -> int:
    """What `params` counts: parameters only, not BatchNorm's running statistics (buffers)."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state_dict.items() if not k.endswith(buffers))


@pytest.fixture(scope="module")
def simple_cnn():
    """(model, state_dict) of simple_cnn with 10 classes and calibrated BatchNorm."""
    model = build_model("simple_cnn")
    return model, model.state_dict()


@pytest.fixture(scope="module")
def registry_ckpt(tmp_path_factory):
    """(arch, num_classes) -> (plain state_dict file, parameter count), each built and saved once."""
    import torch

    folder = tmp_path_factory.mktemp("registry")
    made: dict = {}

    def get(arch: str, num_classes: int):
        if (arch, num_classes) not in made:
            model = build_model(arch, num_classes=num_classes)
            path = folder / f"{arch}-{num_classes}.pt"
            torch.save(model.state_dict(), path)
            made[arch, num_classes] = (path, sum(p.numel() for p in model.parameters()))
        return made[arch, num_classes]

    return get


@pytest.fixture
def importable_dir(tmp_path, monkeypatch):
    """tmp_path on sys.path; modules imported from it are forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(tmp_path) in str(getattr(module, "__file__", "") or ""):
            del sys.modules[name]


def _expect_simple_cnn(info: dict, state_dict, form: str, arch_source: str = "--arch") -> None:
    assert info["arch"] == "simple_cnn"
    assert info["num_classes"] == 10
    assert info["input_shape"] == [3, 32, 32]
    assert info["checkpoint_form"] == form
    assert info["arch_source"] == arch_source
    assert info["params"] == _n_params(state_dict)


# --------------------------------------------------------------------------- plain and training dicts


def test_plain_state_dict(cli, simple_cnn, tmp_path):
    import torch

    _, sd = simple_cnn
    path = tmp_path / "plain.pt"
    torch.save(sd, path)
    info = _inspect(cli, path, "--arch", "simple_cnn")
    _expect_simple_cnn(info, sd, "state_dict")
    assert info["checkpoint"] == str(path)
    assert info["notes"] == []


@pytest.mark.parametrize("key", ["model_state_dict", "state_dict", "model", "net"])
def test_training_dict_under_each_key(cli, tmp_path, key):
    import torch

    model = build_model("simple_cnn")  # a fresh one: the step below changes its weights
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # one real step so the optimizer state holds momentum tensors, as in a real training checkpoint
    model.zero_grad()
    model.train()
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    model.eval()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "train.pth"
    torch.save({key: sd, "optimizer": optimizer.state_dict(), "epoch": 12, "best_acc": 0.91}, path)

    info = _inspect(cli, path, "--arch", "simple_cnn")
    _expect_simple_cnn(info, sd, f"training-dict[{key}]")
    assert any(n.startswith("also holds:") and "optimizer" in n and "epoch" in n for n in info["notes"]), info["notes"]


def test_training_dict_carries_num_classes_and_labels(cli, tmp_path):
    """Spec fields saved beside the weights are used (arch hint, labels)."""
    import torch

    model = build_model("lenet5", num_classes=3)
    path = tmp_path / "meta.pt"
    torch.save({"state_dict": model.state_dict(), "arch": "lenet5", "num_classes": 3, "classes": ["cat", "dog", "emu"]}, path)
    info = _inspect(cli, path)
    assert info["arch"] == "lenet5"
    assert info["arch_source"] == "checkpoint metadata"
    assert info["num_classes"] == 3
    assert info["labels"] == ["cat", "dog", "emu"]
    assert info["input_shape"] == [1, 32, 32]


# --------------------------------------------------------------------------- wrapper prefixes


@pytest.mark.parametrize(
    "prefix, stripped",
    [
        ("module.", ["module."]),  # nn.DataParallel / DistributedDataParallel
        ("_orig_mod.", ["_orig_mod."]),  # torch.compile
        ("module._orig_mod.", ["module.", "_orig_mod."]),  # DataParallel(torch.compile(model))
        ("_orig_mod.module.", ["_orig_mod.", "module."]),  # torch.compile(DataParallel(model))
    ],
)
def test_wrapper_prefixes_are_stripped(cli, simple_cnn, tmp_path, prefix, stripped):
    import torch

    _, sd = simple_cnn
    path = tmp_path / "wrapped.pt"
    torch.save({prefix + k: v for k, v in sd.items()}, path)
    info = _inspect(cli, path, "--arch", "simple_cnn")
    _expect_simple_cnn(info, sd, "state_dict")
    assert info["notes"] == [f"stripped prefix {p!r}" for p in stripped]


def test_ddp_prefix_inside_training_dict(cli, simple_cnn, tmp_path):
    import torch

    _, sd = simple_cnn
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 90}, path)
    info = _inspect(cli, path, "--arch", "simple_cnn")
    _expect_simple_cnn(info, sd, "training-dict[state_dict]")
    assert "stripped prefix 'module.'" in info["notes"]


# --------------------------------------------------------------------------- safetensors


def test_safetensors_with_arch(cli, simple_cnn, tmp_path):
    from safetensors.torch import save_file

    _, sd = simple_cnn
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    info = _inspect(cli, path, "--arch", "simple_cnn")
    _expect_simple_cnn(info, sd, "safetensors")


def test_safetensors_metadata_names_the_arch(cli, tmp_path):
    from safetensors.torch import save_file

    model = build_model("lenet_mnist", num_classes=4)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path), metadata={"arch": "lenet_mnist", "num_classes": "4"})
    info = _inspect(cli, path)
    assert info["arch"] == "lenet_mnist"
    assert info["arch_source"] == "checkpoint metadata"
    assert info["num_classes"] == 4
    assert info["input_shape"] == [1, 28, 28]
    assert info["checkpoint_form"] == "safetensors"


def test_safetensors_prefixed_inferred_and_exported(cli, tmp_path):
    """Full run: a DataParallel-prefixed safetensors file, arch and 7 classes inferred, ONNX verified."""
    from safetensors.torch import save_file

    model = build_model("simple_cnn", num_classes=7)
    path = tmp_path / "ckpt" / "cnn.safetensors"
    path.parent.mkdir()
    save_file({"module." + k: v for k, v in model.state_dict().items()}, str(path))
    out = tmp_path / "out" / "x.onnx"
    report = _export_onnx(cli, path, out)
    assert report["model"]["arch"] == "simple_cnn"
    assert report["model"]["arch_source"] == "inferred from keys and shapes"
    assert report["model"]["num_classes"] == 7
    assert report["model"]["checkpoint_form"] == "safetensors"
    assert report["model"]["input_shape"] == [3, 32, 32]


# --------------------------------------------------------------------------- versioned modules


@pytest.mark.parametrize("form", ["state_dict", "DataParallel", "safetensors"])
def test_a_versioned_module_loads_from_every_form(cli, tmp_path, form):
    """MNASNet refuses weights without the per-module version PyTorch stores beside them."""
    import torch

    torch.manual_seed(0)
    model = build_model("mnasnet0_5", num_classes=5)
    path = tmp_path / ("m.safetensors" if form == "safetensors" else "m.pt")
    if form == "safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))  # no versions at all in this format
    elif form == "DataParallel":
        torch.save(torch.nn.DataParallel(model).state_dict(), path)  # versions keyed "module.…"
    else:
        torch.save(model.state_dict(), path)
    info = _inspect(cli, path, "--arch", "mnasnet0_5", "--input-shape", "3,64,64")
    assert info["arch"] == "mnasnet0_5" and info["num_classes"] == 5
    assert info["params"] == _n_params(model.state_dict())


def test_a_module_that_refuses_its_weights_is_one_clear_sentence(cli, tmp_path):
    import torch

    sd = build_model("mnasnet0_5", num_classes=5).state_dict()
    sd._metadata[""]["version"] = 7  # a layout this torchvision does not know
    torch.save(sd, tmp_path / "m.pt")
    r = cli("inspect", tmp_path / "m.pt", "--arch", "mnasnet0_5", "--input-shape", "3,64,64")
    assert r.exit_code == 2, r
    assert "mnasnet0_5 refused the checkpoint's weights: version should be set to 1 or 2" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


# --------------------------------------------------------------------------- TorchScript input


def test_torchscript_archive_of_registry_model(cli, tmp_path):
    import torch

    model = build_model("lenet5", num_classes=7)
    path = tmp_path / "traced.pt"
    torch.jit.trace(model, torch.zeros(1, 1, 32, 32)).save(str(path))

    info = _inspect(cli, path)
    assert info["checkpoint_form"] == "torchscript"
    assert info["arch_source"].startswith("torchscript")
    assert info["arch"] == "lenet5"
    assert info["num_classes"] == 7
    assert info["input_shape"] == [1, 32, 32]
    assert info["params"] == sum(p.numel() for p in model.parameters())

    out = tmp_path / "out" / "ts.onnx"
    report = _export_onnx(cli, path, out)
    assert report["model"]["checkpoint_form"] == "torchscript"
    assert report["model"]["num_classes"] == 7


def test_torchscript_archive_of_user_model_needs_input_shape(cli, tmp_path):
    import torch

    _, _, model = _user_net_checkpoint(tmp_path)
    path = tmp_path / "user_traced.pt"
    torch.jit.trace(model, torch.zeros(1, 1, 28, 28)).save(str(path))

    # the archive does not say its input size and the model is in no registry: the error names the option
    r = cli("inspect", path, "--json")
    assert r.exit_code == 2, r
    assert "--input-shape" in r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stdout + r.stderr

    info = _inspect(cli, path, "--input-shape", "1,28,28")
    assert info["checkpoint_form"] == "torchscript"
    assert info["num_classes"] == 7  # read from the output
    assert info["input_shape"] == [1, 28, 28]
    assert info["mean"] == [0.5] and info["std"] == [0.5]  # defaults follow the channel count given
    assert info["params"] == sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- whole pickled modules

PICKLED_NET = """
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        input_shape = (3, 32, 32)

        def __init__(self, num_classes=5):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
"""


@pytest.fixture
def tiny_net_class(importable_dir):
    name = f"tinynets_{uuid.uuid4().hex[:8]}"
    (importable_dir / f"{name}.py").write_text(textwrap.dedent(PICKLED_NET))
    module = __import__(name)
    return module.TinyNet


@pytest.mark.parametrize("wrapped", [False, True], ids=["module", "training-dict"])
def test_pickled_module_needs_trust_pickle(cli, tmp_path, tiny_net_class, wrapped):
    import torch

    torch.manual_seed(0)
    model = tiny_net_class(num_classes=5).eval()
    path = tmp_path / "whole.pt"
    torch.save({"model": model, "epoch": 3} if wrapped else model, path)

    r = cli("inspect", path, "--json")
    assert r.exit_code == 2, r
    assert "--trust-pickle" in r.stderr
    assert tiny_net_class.__module__ + ".TinyNet" in r.stderr  # it says which code the file wants to run
    assert r.stdout == ""
    assert "Traceback" not in r.stdout + r.stderr

    info = _inspect(cli, path, "--trust-pickle")
    assert info["checkpoint_form"] == ("training-dict[model] with pickled module" if wrapped else "pickled-module")
    assert info["arch"] == "TinyNet"
    assert info["num_classes"] == 5  # from the output
    assert info["input_shape"] == [3, 32, 32]  # from the class's input_shape attribute
    assert info["params"] == sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- architecture inference


@pytest.mark.parametrize(
    "arch, input_shape",
    [
        ("lenet5", [1, 32, 32]),
        ("lenet_mnist", [1, 28, 28]),  # same shapes as lenet5, told apart by key names
        ("cifar_resnet18", [3, 32, 32]),  # same keys as resnet18, told apart by shapes
        ("resnet18", [3, 224, 224]),
        ("mobilenet_v2", [3, 224, 224]),
    ],
)
def test_arch_inferred_from_keys_and_shapes(cli, registry_ckpt, arch, input_shape):
    path, params = registry_ckpt(arch, 7)
    info = _inspect(cli, path)
    assert info["arch"] == arch
    assert info["arch_source"] == "inferred from keys and shapes"
    assert info["num_classes"] == 7  # from the classifier's shape, not the registry default
    assert info["input_shape"] == input_shape
    assert info["params"] == params


def test_arch_inferred_from_training_dict(cli, lenet5_ckpt):
    info = _inspect(cli, lenet5_ckpt)
    assert info["arch"] == "lenet5"
    assert info["arch_source"] == "inferred from keys and shapes"
    assert info["num_classes"] == 7
    assert info["checkpoint_form"] == "training-dict[model_state_dict]"


def test_explicit_registry_arch_resnet18(cli, registry_ckpt):
    path, params = registry_ckpt("resnet18", 7)
    info = _inspect(cli, path, "--arch", "resnet18")
    assert info["arch"] == "resnet18"
    assert info["arch_source"] == "--arch"
    assert info["num_classes"] == 7  # still read from the fc shape
    assert info["input_shape"] == [3, 224, 224]
    assert info["params"] == params


# --------------------------------------------------------------------------- user architectures

USER_NET = """
    import torch
    from torch import nn


    class Net(nn.Module):
        \"\"\"A 1x28x28 model with a fixed-size classifier: it needs --input-shape.\"\"\"

        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(4 * 14 * 14, num_classes)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.head(torch.flatten(x, 1))
"""


def _user_net_checkpoint(tmp_path):
    import importlib.util

    import torch

    file = tmp_path / "user_net.py"
    file.write_text(textwrap.dedent(USER_NET))
    spec = importlib.util.spec_from_file_location(f"_test_user_net_{uuid.uuid4().hex[:8]}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.Net(num_classes=7)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, 28, 28))
    model.eval()
    path = tmp_path / "user.pt"
    torch.save(model.state_dict(), path)
    return file, path, model


def test_user_file_class_with_arch_kwargs(cli, tmp_path):
    file, path, model = _user_net_checkpoint(tmp_path)
    arch = f"{file}:Net"

    info = _inspect(cli, path, "--arch", arch, "--arch-kwargs", '{"num_classes": 7}', "--input-shape", "1,28,28")
    assert info["arch"] == arch
    assert info["arch_source"] == "--arch (user code)"
    assert info["num_classes"] == 7
    assert info["input_shape"] == [1, 28, 28]
    assert info["mean"] == [0.5] and info["std"] == [0.5]  # one channel: single-channel defaults
    assert info["params"] == sum(p.numel() for p in model.parameters())

    # without --arch-kwargs the class builds 10 classes: the mismatch is named
    r = cli("inspect", path, "--arch", arch, "--input-shape", "1,28,28")
    assert r.exit_code == 2, r
    assert "head.weight" in r.stderr and "shape mismatch" in r.stderr

    # without --input-shape: 224x224 does not fit the Linear layer; of the tutorial sizes only 28 runs
    info = _inspect(cli, path, "--arch", arch, "--arch-kwargs", '{"num_classes": 7}')
    assert info["input_shape"] == [1, 28, 28]
    assert any("runs only at 28x28" in n for n in info["notes"])


def test_user_class_that_runs_at_no_tutorial_size_names_the_option(cli, tmp_path):
    import torch

    file = tmp_path / "odd.py"
    file.write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        class Odd(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)
                self.fc = nn.Linear(4 * 41 * 41, 5)  # trained at 43x43

            def forward(self, x):
                return self.fc(torch.flatten(self.conv(x), 1))
    """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        spec = __import__("importlib.util").util.spec_from_file_location("odd_mod", file)
        module = __import__("importlib.util").util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    path = tmp_path / "odd.pt"
    torch.save(module.Odd().state_dict(), path)
    r = cli("inspect", path, "--arch", f"{file}:Odd")
    assert r.exit_code == 2, r
    assert "--input-shape" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert _inspect(cli, path, "--arch", f"{file}:Odd", "--input-shape", "3,43,43")["input_shape"] == [3, 43, 43]


def test_user_class_running_at_every_size_keeps_224_and_says_so(cli, tmp_path):
    import torch

    file = tmp_path / "gap.py"
    file.write_text(textwrap.dedent(PICKLED_NET))
    net = {}
    exec(compile(textwrap.dedent(PICKLED_NET).replace("input_shape = (3, 32, 32)", ""), str(file), "exec"), net)
    file.write_text(textwrap.dedent(PICKLED_NET).replace("input_shape = (3, 32, 32)", "pass"))
    path = tmp_path / "gap.pt"
    torch.save(net["TinyNet"]().state_dict(), path)
    info = _inspect(cli, path, "--arch", f"{file}:TinyNet")
    assert info["input_shape"] == [3, 224, 224]
    assert any("runs at several sizes" in n and "--input-shape" in n for n in info["notes"])


def test_user_file_class_exported(cli, tmp_path):
    file, path, _ = _user_net_checkpoint(tmp_path)
    out = tmp_path / "out" / "user.onnx"
    report = _export_onnx(
        cli, path, out, "--arch", f"{file}:Net", "--arch-kwargs", '{"num_classes": 7}', "--input-shape", "1,28,28"
    )
    assert report["model"]["num_classes"] == 7
    assert report["model"]["input_shape"] == [1, 28, 28]
    stored = json.loads((out.parent / "user.onnx.report.json").read_text())
    assert stored["artifacts"][0]["sha256"] == report["artifacts"][0]["sha256"]


PACKAGE_NETS = """
    from torch import nn


    def make_net(num_classes=10, width=8):
        return nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )
"""


def test_package_module_factory(cli, tmp_path, importable_dir):
    import torch

    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    (importable_dir / package).mkdir()
    (importable_dir / package / "__init__.py").write_text("")
    (importable_dir / package / "nets.py").write_text(textwrap.dedent(PACKAGE_NETS))
    nets = __import__(f"{package}.nets", fromlist=["make_net"])
    torch.manual_seed(0)
    model = nets.make_net(num_classes=7, width=16).eval()
    path = tmp_path / "factory.pt"
    torch.save(model.state_dict(), path)

    arch = f"{package}.nets:make_net"
    info = _inspect(cli, path, "--arch", arch, "--arch-kwargs", '{"num_classes": 7, "width": 16}')
    assert info["arch"] == arch
    assert info["arch_source"] == "--arch (user code)"
    assert info["num_classes"] == 7
    assert info["input_shape"] == [3, 224, 224]  # no shape known: the ImageNet default
    assert info["checkpoint_form"] == "state_dict"
    assert info["params"] == sum(p.numel() for p in model.parameters())

    r = cli("inspect", path, "--arch", f"{package}.nets:no_such_factory")
    assert r.exit_code == 2, r
    assert "no_such_factory" in r.stderr
