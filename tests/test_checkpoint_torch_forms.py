"""Every checkpoint form torch itself writes is read, or refused with exit 2 and a sentence (never exit 4).

Through the real CLI with real files: TorchScript archives of torchvision models (scripted and
traced) and of a user package called ``models``, our own ``cnnexport torchscript`` output read
back, torch.save zips whose member paths contain ``code/`` or ``models/``, exported programs;
torch.ao quantization-aware-training state_dicts (eager and FX, observers run or not); fp16 and
bf16 weights. The readable forms export to ONNX and pass verification; the refused ones (torch.ao
converted models, meta-device weights) come from tests/corpus/torch_forms.py, which the corpus
shares.
"""

from __future__ import annotations

import copy
import textwrap
import warnings
import zipfile

import pytest

from tests.conftest import build_model, files_in, user_model_class
from tests.corpus.torch_forms import simple_cnn, write_torch_form_cases
from tests.test_checkpoint_forms import _inspect as inspect
from tests.verdicts import verified

pytestmark = pytest.mark.filterwarnings("ignore")


def assert_error(r, code: int, *needles: str) -> str:
    """Exit code, exactly one `error:` line (the last one), no traceback; returns the message."""
    assert r.exit_code == code, r
    assert "Traceback" not in r.stdout + r.stderr, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r
    assert r.stderr.rstrip().splitlines()[-1] == errors[0], r
    message = errors[0][len("error: ") :]
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in {message!r}"
    return message


def export_onnx(cli, path, out, *args) -> dict:
    """`cnnexport onnx` exits 0 and the report's verdict is pass."""
    r = cli("onnx", path, "-o", out, "--json", *args)
    assert r.exit_code == 0, r
    report = r.json()
    verification = report["artifacts"][0]["verification"]
    assert verified(verification), verification
    return report


def _jit(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        return fn(*args)


# --------------------------------------------------------------------------- TorchScript


@pytest.fixture(scope="module")
def torchvision_archives(tmp_path_factory):
    """torch.jit.script of mobilenet_v3_small and torch.jit.trace of resnet18 (random weights, 10 classes)."""
    import torch
    import torchvision

    folder = tmp_path_factory.mktemp("torchscript")
    torch.manual_seed(0)
    mobilenet = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).eval()
    resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    scripted, traced = folder / "mobilenet_v3_small_scripted.pt", folder / "resnet18_traced.pt"
    _jit(torch.jit.script, mobilenet).save(str(scripted))
    _jit(torch.jit.trace, resnet, torch.rand(1, 3, 64, 64)).save(str(traced))
    return {"script": (scripted, "mobilenet_v3_small"), "trace": (traced, "resnet18")}


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archive_of_a_torchvision_model_is_read(cli, torchvision_archives, how):
    path, arch = torchvision_archives[how]
    with zipfile.ZipFile(path) as zf:  # the user-code path the old substring test tripped over
        assert any("/code/__torch__/torchvision/models/" in n for n in zf.namelist())
    info = inspect(cli, path)
    assert info["checkpoint_form"] == "torchscript"
    assert info["arch"] == arch and info["num_classes"] == 10


def test_torchscript_archive_of_a_torchvision_model_exports(cli, torchvision_archives, tmp_path):
    path, _ = torchvision_archives["script"]
    report = export_onnx(cli, path, tmp_path / "mobilenet.onnx", "--input-shape", "3,64,64")
    assert report["model"]["checkpoint_form"] == "torchscript"


def test_torchscript_of_a_user_package_called_models(cli, tmp_path, monkeypatch):
    import torch

    package = tmp_path / "models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "net.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)
                self.fc = nn.Linear(8, 4)

            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from models.net import Net

    path = tmp_path / "user.pt"
    _jit(torch.jit.script, Net().eval()).save(str(path))
    with zipfile.ZipFile(path) as zf:
        assert any("/code/__torch__/models/net.py" in n for n in zf.namelist())
    report = export_onnx(cli, path, tmp_path / "out" / "user.onnx", "--input-shape", "3,16,16")
    assert report["model"]["checkpoint_form"] == "torchscript"
    assert report["model"]["num_classes"] == 4


def test_our_torchscript_artifact_of_a_torchvision_model_reads_back(cli, tmp_path):
    import torch

    ckpt = tmp_path / "mobilenet.pt"
    torch.save(build_model("mobilenet_v3_small", num_classes=10).state_dict(), ckpt)
    ts = tmp_path / "out" / "mobilenet.ts"
    r = cli("torchscript", ckpt, "--arch", "mobilenet_v3_small", "--input-shape", "3,64,64", "-o", ts)
    assert r.exit_code == 0, r
    report = export_onnx(cli, ts, tmp_path / "again" / "mobilenet.onnx", "--input-shape", "3,64,64")
    assert report["model"]["checkpoint_form"] == "torchscript"
    assert report["model"]["arch"] == "mobilenet_v3_small"


@pytest.mark.parametrize(
    "extra",
    [
        ("code/__torch__/net.py", "code/constants.pkl"),
        ("models/README",),
        ("code/__torch__/models/net.py", "models/model.json"),
    ],
    ids=["code", "models", "code-and-models"],
)
def test_torch_save_zip_with_code_or_models_member_paths_is_a_state_dict(cli, tmp_path, extra):
    """torch.save zips are read by torch.load whatever other records they hold; only the
    archive's own top-level records (constants.pkl beside code/) make a TorchScript archive."""
    import torch

    folder = tmp_path / "code" / "models"
    folder.mkdir(parents=True)
    path = folder / "simple_cnn.pt"  # named after its architecture: inference stops at the first fit
    torch.save(simple_cnn().state_dict(), path)
    with zipfile.ZipFile(path, "a") as zf:
        for name in extra:
            zf.writestr(f"simple_cnn/{name}", "not a model\n")
    assert len(torch.load(path, weights_only=True)) == len(simple_cnn().state_dict())
    info = inspect(cli, path)
    assert info["checkpoint_form"] == "state_dict"
    assert info["arch"] == "simple_cnn"


def test_exported_program_is_still_read(cli, tmp_path):
    import torch

    model = simple_cnn()
    program = torch.export.export(
        model, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}}
    )
    path = tmp_path / "simple.pt2"
    torch.export.save(program, str(path))
    info = inspect(cli, path)
    assert info["checkpoint_form"] == "exported-program"
    assert info["input_shape"] == [3, 32, 32]


# --------------------------------------------------------------------------- torch.ao QAT (prepared)

# The float model as a user writes it for eager-mode QAT: stubs around a conv+bn+relu whose names
# follow the usual pattern (conv/bn) and one whose names do not (proj/proj_norm: placed by module order).
QNET = """
import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub


class QNet(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.quant = QuantStub()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.proj = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.proj_norm = nn.BatchNorm2d(16)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.act(self.proj_norm(self.proj(self.relu(self.bn(self.conv(x))))))
        x = self.fc(torch.flatten(self.pool(x), 1))
        return self.dequant(x)
"""


def _qat_prepare(model, groups):
    import torch.ao.quantization as tq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = copy.deepcopy(model).train()
        model.qconfig = tq.get_default_qat_qconfig("fbgemm")
        return tq.prepare_qat(tq.fuse_modules_qat(model, groups))


@pytest.fixture(scope="module")
def qnet(tmp_path_factory):
    """(the --arch of the float class, a seeded float model with calibrated BatchNorm)."""
    import torch

    folder = tmp_path_factory.mktemp("qnet")
    cls = user_model_class(folder, QNET, "qnet", "QNet")
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        model.train()
        model(torch.rand(8, 3, 16, 16))
    return f"{folder / 'qnet.py'}:QNet", model.eval()


@pytest.mark.parametrize("observed", [False, True], ids=["observers-never-ran", "observers-ran"])
def test_eager_qat_state_dict_exports_as_the_float_model(cli, tmp_path, qnet, observed):
    import torch

    arch, model = qnet
    prepared = _qat_prepare(model, [["conv", "bn", "relu"], ["proj", "proj_norm", "act"]])
    if observed:  # in eval mode: the observers run, the BatchNorm statistics stay the float model's
        with torch.no_grad():
            prepared.eval()(torch.rand(4, 3, 16, 16))
    state = prepared.state_dict()
    assert any(k.endswith("min_val") and torch.isinf(v).all() for k, v in state.items()) != observed
    path = tmp_path / "qat.pt"
    torch.save(state, path)

    info = inspect(cli, path, "--arch", arch, "--input-shape", "3,16,16")
    note = next(n for n in info["notes"] if "quantization-aware training" in n)
    assert "observer/fake-quantize buffers" in note and "2 BatchNorm(s)" in note and "cnnexport quantize" in note
    export_onnx(cli, path, tmp_path / "out" / "qat.onnx", "--arch", arch, "--input-shape", "3,16,16")
    # the float weights are the model's own: conv+bn moved back, not folded
    from exporter.loading.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, arch=arch, spec_overrides={"input_shape": (3, 16, 16)})
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x))


def test_qat_wrapped_registry_model_is_inferred(cli, tmp_path):
    """QuantWrapper(simple_cnn): observers under quant., the network under module.; no --arch."""
    import torch
    import torch.ao.quantization as tq

    model = build_model("simple_cnn")
    prepared = _qat_prepare(tq.QuantWrapper(model), [[f"module.features.{i}.{j}" for j in range(3)] for i in (0, 2, 4)])
    path = tmp_path / "simple_cnn_qat_wrapped.pt"  # named after its architecture: a fast inference
    torch.save({"model": prepared.state_dict(), "epoch": 1}, path)  # a training dict, as train loops save it
    report = export_onnx(cli, path, tmp_path / "out" / "qat.onnx")
    assert report["model"]["arch"] == "simple_cnn"
    info = inspect(cli, path)
    assert any("quantization-aware training" in n for n in info["notes"])


def test_fx_qat_state_dict_is_inferred(cli, tmp_path):
    import torch
    import torch.ao.quantization as tq
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(
            build_model("simple_cnn").train(), tq.get_default_qat_qconfig_mapping("fbgemm"), (torch.rand(1, 3, 32, 32),)
        )
    assert any(k.startswith("activation_post_process_0.") for k in prepared.state_dict())
    path = tmp_path / "simple_cnn_qat_fx.pt"
    torch.save(prepared.state_dict(), path)
    info = inspect(cli, path)
    assert info["arch"] == "simple_cnn"
    assert any("quantization-aware training" in n for n in info["notes"])
    # issue 43: an export prints the notes too (one line each, under the model line), not only the JSON report
    r = cli("onnx", path, "-o", tmp_path / "qat.onnx")
    assert r.exit_code == 0, r
    lines = r.stderr.splitlines()
    model_line = next(i for i, line in enumerate(lines) if "model: simple_cnn" in line)
    notes = [line for line in lines if "note: " in line]
    assert notes and all(lines.index(note) > model_line for note in notes)
    assert any("quantization-aware training" in note for note in notes), lines
    assert "note:" not in cli("onnx", path, "-o", tmp_path / "qat2.onnx", "-q").stderr  # --quiet stays quiet


def test_qat_weights_that_diverged_are_still_refused(cli, tmp_path, qnet):
    """Dropping observer buffers must not hide NaN in the weights themselves."""
    import torch

    arch, model = qnet
    state = _qat_prepare(model, [["conv", "bn", "relu"], ["proj", "proj_norm", "act"]]).state_dict()
    state["fc.weight"][0, 0] = float("nan")
    path = tmp_path / "qat_nan.pt"
    torch.save(state, path)
    assert_error(cli("inspect", path, "--arch", arch), 2, "NaN or infinite", "fc.weight", "diverged")


# --------------------------------------------------------------------------- fp16 / bf16


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_weights_are_upcast_and_said(cli, tmp_path, dtype):
    import torch

    model = build_model("simple_cnn").to(getattr(torch, dtype))
    path = tmp_path / f"{dtype}.pt"
    torch.save(model.state_dict(), path)
    info = inspect(cli, path, "--arch", "simple_cnn")
    assert any(f"stored as {dtype}" in n and "upcast to float32" in n for n in info["notes"]), info["notes"]
    export_onnx(cli, path, tmp_path / "out" / f"{dtype}.onnx", "--arch", "simple_cnn")


# --------------------------------------------------------------------------- refused forms (exit 2)


@pytest.fixture(scope="module")
def refused_forms(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_forms")
    return root, write_torch_form_cases(root)


def test_refused_forms_cover_converted_and_meta(refused_forms):
    ids = {case_id for case_id, *_ in refused_forms[1]}
    assert {
        "torch-quantized-state-dict",
        "torch-quantized-module",
        "torch-quantized-module-trusted",
        "torch-meta-state-dict",
        "torch-meta-module-trusted",
    } <= ids
    assert all(code == 2 for _, _, code, _ in refused_forms[1])


def test_refused_torch_forms(cli, refused_forms):
    """Each refused form: exit 2, one error line with the words, no traceback, no file written."""
    root, cases = refused_forms
    before = files_in(root)
    failures = []
    for case_id, args, code, words in cases:
        r = cli(*args)
        try:
            assert_error(r, code, *words)
        except AssertionError as exc:
            failures.append(f"{case_id}: {exc}")
    assert not failures, "\n".join(failures)
    assert files_in(root) == before
