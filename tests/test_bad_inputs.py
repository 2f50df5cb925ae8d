"""Every bad input: its exit code, one `error:` line naming the problem, no traceback, no file left.

All through the real CLI with real files. Nothing here runs an export to completion, so the
whole file takes seconds; cases that need a checkpoint pass ``--arch`` to skip inference.
"""

from __future__ import annotations

import builtins
import os
import pickle
import random
import shlex
import sys
import types
import uuid
import zipfile

import pytest

from tests.conftest import build_model, files_in

EXIT_BAD_INPUT = 2


def assert_error(r, code: int, *needles: str) -> str:
    """Exit code, exactly one `error:` line (the last one), no traceback; returns the message."""
    assert r.exit_code == code, r
    assert "Traceback" not in r.stdout and "Traceback" not in r.stderr, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r
    assert r.stderr.rstrip().splitlines()[-1] == errors[0], r
    message = errors[0][len("error: ") :]
    assert len(message) > 20, r
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in {message!r}"
    return message


@pytest.fixture
def out_dir(tmp_path):
    """An existing, empty output folder: whatever a failed run leaves in it shows up."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def simple_cnn_state():
    return build_model("simple_cnn").state_dict()


# --------------------------------------------------------------------------- unreadable checkpoints


def _missing(path, sd):
    return path  # never written


def _empty(path, sd):
    path.write_bytes(b"")


def _truncated(path, sd):
    import torch

    torch.save(sd, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path, sd):
    path.write_bytes(random.Random(1234).randbytes(4096))


def _text(path, sd):
    path.write_text("epoch,loss\n1,0.93\n2,0.71\n3,0.52\n")


def _foreign_zip(path, sd):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a model")
        zf.writestr("weights.csv", "1,2,3\n")


def _no_weights(path, sd):
    import torch

    torch.save({"epoch": 12, "lr": 0.01, "history": [0.9, 0.7, 0.5]}, path)


def _nan_weights(path, sd):
    import torch

    bad = {k: v.clone() for k, v in sd.items()}
    bad["classifier.2.weight"][0, 0] = float("nan")
    torch.save(bad, path)


def _directory(path, sd):
    path.mkdir()


BAD_CHECKPOINTS = [
    pytest.param(_missing, ["does not exist"], id="missing"),
    pytest.param(_empty, ["empty", "0 bytes"], id="zero-bytes"),
    pytest.param(_truncated, ["truncated or corrupt"], id="truncated"),
    pytest.param(_random_bytes, ["not a PyTorch checkpoint"], id="random-bytes"),
    pytest.param(_text, ["not a PyTorch checkpoint"], id="text-file"),
    pytest.param(_foreign_zip, ["not a PyTorch checkpoint"], id="foreign-zip"),
    pytest.param(_no_weights, ["without model weights", "epoch"], id="dict-without-weights"),
    pytest.param(_nan_weights, ["NaN", "classifier.2.weight", "diverged"], id="nan-weights"),
    pytest.param(_directory, ["is a directory"], id="directory"),
]


@pytest.mark.parametrize("make, needles", BAD_CHECKPOINTS)
def test_bad_checkpoint_file(cli, tmp_path, out_dir, simple_cnn_state, make, needles):
    inputs = tmp_path / "in"
    inputs.mkdir()
    ckpt = inputs / "model.pt"
    make(ckpt, simple_cnn_state)
    before = files_in(inputs)

    message = assert_error(cli("inspect", ckpt, "--json"), EXIT_BAD_INPUT, *needles)
    if make is not _nan_weights:  # that one names the tensor instead
        assert str(ckpt) in message  # names the file
    assert "--trust-pickle" not in message  # none of these holds pickled code

    r = cli("onnx", ckpt, "--arch", "simple_cnn", "-o", out_dir / "x.onnx", "--json")
    assert_error(r, EXIT_BAD_INPUT, *needles)
    assert r.stdout == ""  # no half report on stdout either
    assert files_in(out_dir) == set()
    assert files_in(inputs) == before


# --------------------------------------------------------------------------- bad architectures and options


def _labels(tmp_path, data: bytes):
    path = tmp_path / "labels.txt"
    path.write_bytes(data)
    return path


BAD_OPTIONS = [
    pytest.param(
        lambda t: ["--arch", "resnet18"],
        ["does not fit architecture resnet18", "missing", "unexpected", "conv1.weight", "features.0"],
        id="wrong-arch",
    ),
    pytest.param(lambda t: ["--arch", "not_a_real_net"], ["unknown architecture", "not_a_real_net"], id="unknown-arch"),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--arch-kwargs", "{num_classes: 7}"],
        ["--arch-kwargs", "JSON"],
        id="arch-kwargs-not-json",
    ),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--arch-kwargs", "[7]"], ["--arch-kwargs", "JSON object"], id="arch-kwargs-not-object"
    ),
    pytest.param(lambda t: ["--arch", f"{t}/missing.py:Net"], ["missing.py", "does not exist"], id="arch-file-missing"),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--input-shape", "3,32"], ["--input-shape", "3,32"], id="input-shape-two-dims"
    ),
    pytest.param(lambda t: ["--arch", "simple_cnn", "--input-shape", "3,x,32"], ["--input-shape"], id="input-shape-not-numbers"),
    pytest.param(lambda t: ["--arch", "simple_cnn", "--input-shape", "3,0,32"], ["--input-shape"], id="input-shape-zero"),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--mean", "0.5,0.5"], ["--mean has 2 values", "3 input channels"], id="mean-count"
    ),
    pytest.param(lambda t: ["--arch", "simple_cnn", "--std", "0.2,0.2,0"], ["--std", "positive"], id="std-zero"),
    pytest.param(lambda t: ["--arch", "simple_cnn", "--batch-sizes", "0,4"], ["--batch-sizes"], id="batch-sizes-zero"),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--batch-sizes", "one,four"], ["--batch-sizes", "one,four"], id="batch-sizes-words"
    ),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--labels", _labels(t, b"cat\ndog\nemu\n")],
        ["3 entries", "10 classes"],
        id="labels-wrong-count",
    ),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--labels", _labels(t, "caf\u00e9\n".encode("latin-1") * 10)],
        ["labels.txt", "UTF-8"],
        id="labels-not-utf8",
    ),
    pytest.param(
        lambda t: ["--arch", "simple_cnn", "--labels", t / "nope.txt"], ["nope.txt", "does not exist"], id="labels-missing"
    ),
]


@pytest.mark.parametrize("make_args, needles", BAD_OPTIONS)
def test_bad_option(cli, tmp_path, out_dir, simple_cnn_ckpt, make_args, needles):
    r = cli("onnx", simple_cnn_ckpt, "-o", out_dir / "x.onnx", *make_args(tmp_path))
    assert_error(r, EXIT_BAD_INPUT, *needles)
    assert files_in(out_dir) == set()


def test_wrong_arch_in_inspect_lists_keys(cli, simple_cnn_ckpt):
    message = assert_error(cli("inspect", simple_cnn_ckpt, "--arch", "resnet18", "--json"), EXIT_BAD_INPUT)
    assert "missing (" in message and "unexpected (" in message
    assert "layer1.0.conv1.weight" in message or "conv1.weight" in message


# --------------------------------------------------------------------------- output problems


def test_unwritable_output_folder(cli, tmp_path, simple_cnn_ckpt):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:  # root ignores permission bits: then use a folder that cannot exist, under a file
            (locked / "probe").touch()
            (locked / "probe").unlink()
            blocker = tmp_path / "blocker"
            blocker.write_text("a file, not a folder")
            out = blocker / "models" / "x.onnx"
        except PermissionError:
            blocker = None
            out = locked / "x.onnx"
        r = cli("onnx", simple_cnn_ckpt, "--arch", "simple_cnn", "-o", out)
        assert_error(r, EXIT_BAD_INPUT, "output folder", str(out.parent))
        assert files_in(locked) == set()
        if blocker is not None:
            assert blocker.read_text() == "a file, not a folder"
    finally:
        locked.chmod(0o700)


def test_output_path_is_a_directory(cli, out_dir, simple_cnn_ckpt):
    (out_dir / "x.onnx").mkdir()
    r = cli("onnx", simple_cnn_ckpt, "--arch", "simple_cnn", "-o", out_dir / "x.onnx")
    assert_error(r, EXIT_BAD_INPUT, "is a directory")
    assert files_in(out_dir) == {"x.onnx"}  # the folder, still empty
    assert (out_dir / "x.onnx").is_dir()


GOOD_BYTES = b"a previous, verified artifact\x00\x01\x02"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--arch", "resnet18"], id="fails-while-loading"),
        # the legacy exporter writes an opset-1 model that onnx.checker rejects: fails after staging
        pytest.param(["--arch", "simple_cnn", "--exporter", "legacy", "--opset", "1"], id="fails-while-exporting"),
    ],
)
def test_failed_run_keeps_existing_artifact(cli, out_dir, simple_cnn_ckpt, args):
    target = out_dir / "x.onnx"
    target.write_bytes(GOOD_BYTES)
    report = out_dir / "x.onnx.report.json"
    report.write_text('{"previous": true}')

    r = cli("onnx", simple_cnn_ckpt, "-o", target, *args)
    assert_error(r, EXIT_BAD_INPUT)
    assert target.read_bytes() == GOOD_BYTES
    assert report.read_text() == '{"previous": true}'
    assert files_in(out_dir) == {"x.onnx", "x.onnx.report.json"}  # no staging folder left


# --------------------------------------------------------------------------- verify


@pytest.fixture(scope="module")
def real_onnx(tmp_path_factory, simple_cnn_ckpt):
    """A real, verified ONNX artifact (legacy exporter: fastest), alone in its folder."""
    from exporter import export_artifact, load_checkpoint

    folder = tmp_path_factory.mktemp("artifact")
    result = export_artifact(
        "onnx", load_checkpoint(simple_cnn_ckpt, arch="simple_cnn"), folder / "m.onnx", {"exporter": "legacy"}, write=False
    )
    assert result.verification.status == "pass", result.verification.reason
    assert files_in(folder) == {"m.onnx"}
    return folder / "m.onnx"


def test_verify_without_reference(cli, real_onnx):
    before = files_in(real_onnx.parent)
    assert_error(cli("verify", real_onnx), EXIT_BAD_INPUT, "--checkpoint", "--reference")
    assert files_in(real_onnx.parent) == before  # no report written


def test_verify_missing_artifact(cli, tmp_path, simple_cnn_ckpt):
    missing = tmp_path / "nope.onnx"
    assert_error(
        cli("verify", missing, "--checkpoint", simple_cnn_ckpt, "--arch", "simple_cnn"),
        EXIT_BAD_INPUT,
        "nope.onnx",
        "does not exist",
    )
    assert files_in(tmp_path) == set()


def test_verify_corrupt_onnx(cli, tmp_path, simple_cnn_ckpt):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(random.Random(7).randbytes(2048))
    assert_error(cli("verify", bad, "--checkpoint", simple_cnn_ckpt, "--arch", "simple_cnn"), EXIT_BAD_INPUT, "bad.onnx")
    assert files_in(tmp_path) == {"bad.onnx"}  # no report beside it
    # the same without a checkpoint: it fails at reading the file, not at asking for a reference
    assert_error(cli("verify", bad, "--reference", bad), EXIT_BAD_INPUT, "bad.onnx")
    assert files_in(tmp_path) == {"bad.onnx"}


# --------------------------------------------------------------------------- hostile and broken pickles


class _ExecPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


class _SystemPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _torch_save(obj, path):
    import torch

    torch.save(obj, path)


def _pickle_dump(obj, path):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _unsafe_load(path):
    """What the CLI must never do without --trust-pickle (used only to prove the payload is live)."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a plain pickle is not a torch file; plain pickle.load runs it then
        with open(path, "rb") as fh:
            pickle.load(fh)


HOSTILE = [
    pytest.param(_ExecPayload, _torch_save, "evil.pt", False, id="exec-torch-save"),
    pytest.param(_SystemPayload, _torch_save, "evil.pth", False, id="os-system-torch-save"),
    pytest.param(_SystemPayload, _pickle_dump, "evil.pt", False, id="os-system-plain-pickle"),
    pytest.param(_ExecPayload, _torch_save, "evil.pt2", False, id="exec-named-pt2"),
    pytest.param(_ExecPayload, _torch_save, "weights.pt", True, id="hidden-beside-real-weights"),
]


@pytest.mark.parametrize("payload, save, name, beside_weights", HOSTILE)
def test_hostile_pickle_is_never_run(cli, tmp_path, out_dir, simple_cnn_state, payload, save, name, beside_weights):
    marker = tmp_path / "MARKER"
    path = tmp_path / name
    evil = payload(marker)
    save({"model_state_dict": simple_cnn_state, "callback": evil} if beside_weights else evil, path)
    assert not marker.exists()

    for args in (("inspect", path, "--json"), ("onnx", path, "-o", out_dir / "x.onnx"), ("onnx", path, "--arch", "simple_cnn")):
        r = cli(*args)
        assert_error(r, EXIT_BAD_INPUT, "--trust-pickle", str(path))
        assert not marker.exists(), f"{args[0]} ran code from the file"
    assert files_in(out_dir) == set()
    assert files_in(tmp_path) == {name, "out"}

    # the payload is live: an unsafe load does create the marker (so the checks above mean something)
    _unsafe_load(path)
    assert marker.exists()


def test_trusted_pickle_of_missing_module(cli, tmp_path, out_dir, monkeypatch):
    import torch
    from torch import nn

    name = f"vanished_models_{uuid.uuid4().hex[:8]}"
    module = types.ModuleType(name)

    class GoneNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

    GoneNet.__module__ = name
    GoneNet.__qualname__ = "GoneNet"
    module.GoneNet = GoneNet
    monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "whole.pt"
    torch.save(GoneNet(), path)
    monkeypatch.delitem(sys.modules, name)

    message = assert_error(cli("inspect", path, "--trust-pickle", "--json"), EXIT_BAD_INPUT, name, "cannot be imported")
    assert str(path) in message
    r = cli("onnx", path, "--trust-pickle", "-o", out_dir / "x.onnx")
    assert_error(r, EXIT_BAD_INPUT, name)
    assert files_in(out_dir) == set()

    # without --trust-pickle the same file is refused before anything is imported
    assert_error(cli("inspect", path), EXIT_BAD_INPUT, "--trust-pickle", f"{name}.GoneNet")
