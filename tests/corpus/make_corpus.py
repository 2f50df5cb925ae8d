"""The bad-input corpus: every input cnnexport reads, broken the ways real files and typing break.

``make_corpus(root)`` writes the broken files under ``root`` (a temporary folder; nothing binary
is committed) and returns the cases. A case is a command line, the exit code the README
documents for it, and the words its one ``error:`` line must contain. ``run_case`` runs one
through the real CLI (in process, Typer's CliRunner) and ``judge`` lists what went wrong:

* the exit code differs, or a Python exception escaped, or a "Traceback" was printed;
* not exactly one ``error:`` line, or it lacks the words that name the problem;
* any file under ``root`` appeared, vanished or changed (no partial artifact, no report,
  no staging folder, no output folder);
* a hostile payload ran (its marker file exists).

A case whose files an optional package writes (Ultralytics writes the YOLO checkpoints) is built only
where that package imports; elsewhere it comes back unbuilt with ``skip`` saying why.

Used by tests/test_corpus.py and benchmarks/robustness.py. Run directly to write the corpus
somewhere and print it:  python -m tests.corpus.make_corpus /tmp/corpus
"""

from __future__ import annotations

import builtins
import importlib
import json
import os
import pickle
import random
import shlex
import sys
import types
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

EXIT_VERIFICATION_FAILED = 1
EXIT_BAD_INPUT = 2

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.2435, 0.2616)

# every kind of input the tool reads; the corpus covers each
INPUT_KINDS = ("checkpoint", "onnx", "mlpackage", "recipe", "data", "labels", "cli", "output")


@dataclass(frozen=True)
class Case:
    id: str
    input: str  # one of INPUT_KINDS
    args: tuple[str, ...]
    exit_code: int
    words: tuple[str, ...]  # the error line names the problem with these (case-insensitive)
    markers: tuple[str, ...] = ()  # files a hostile payload would create if it ran
    usage: bool = False  # a Typer usage error (its own boxed message) rather than our `error:` line
    needs: str = ""  # the optional package its files are written with (Ultralytics writes the YOLO checkpoints)
    skip: str = ""  # why it was not built here: its package is not importable (the test is skipped with this reason)

    def command(self) -> str:
        return "cnnexport " + " ".join(shlex.quote(a) for a in self.args)


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


@dataclass
class Verdict:
    case: Case
    outcome: Outcome
    problems: list[str] = field(default_factory=list)
    traceback: bool = False
    partial_files: list[str] = field(default_factory=list)
    harmed_inputs: list[str] = field(default_factory=list)  # files under in/ that changed or vanished
    payload_ran: bool = False

    @property
    def clean(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- hostile payloads


class ExecPayload:
    """Unpickling calls exec(), which creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


class SystemPayload:
    """Unpickling runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def save_hostile(path: Path, marker: Path, kind: str = "exec", plain_pickle: bool = False, beside=None) -> None:
    payload = ExecPayload(marker) if kind == "exec" else SystemPayload(marker)
    obj = {"model_state_dict": beside, "callback": payload} if beside is not None else payload
    if plain_pickle:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh)
    else:
        import torch

        torch.save(obj, path)


def save_pickle_of_missing_module(path: Path, module_name: str) -> None:
    """A whole pickled nn.Module whose class lives in a module that cannot be imported here."""
    import torch
    from torch import nn

    module = types.ModuleType(module_name)

    class GoneNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

    GoneNet.__module__ = module_name
    GoneNet.__qualname__ = "GoneNet"
    module.GoneNet = GoneNet
    sys.modules[module_name] = module
    try:
        torch.save(GoneNet(), path)
    finally:
        del sys.modules[module_name]


# --------------------------------------------------------------------------- shared good inputs


class Corpus:
    """The folder layout: in/ (inputs), out/ (must stay empty), markers/ (must stay empty)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.inputs = self.root / "in"
        self.outputs = self.root / "out"
        self.markers = self.root / "markers"
        for folder in (self.inputs, self.outputs, self.markers):
            folder.mkdir(parents=True, exist_ok=True)
        self.state_dict = simple_cnn_state_dict()
        self.good_ckpt = self.inputs / "good.pt"
        import torch

        torch.save(self.state_dict, self.good_ckpt)
        self.good_onnx = self.inputs / "good.onnx"
        save_onnx(tiny_onnx(), self.good_onnx)
        self.good_npy = self.inputs / "calib.npy"
        import numpy as np

        np.save(self.good_npy, np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))

    def path(self, name: str) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def out(self, name: str) -> str:
        return str(self.outputs / name)

    def marker(self, name: str) -> Path:
        return self.markers / name

    def onnx_args(self, ckpt: Path) -> tuple[str, ...]:
        """Export a checkpoint: loading fails before any export work for every checkpoint case."""
        return ("onnx", str(ckpt), "--arch", "simple_cnn", "-o", self.out("x.onnx"))


def simple_cnn_state_dict() -> dict:
    import torch

    from exporter import architectures

    torch.manual_seed(0)
    return architectures.get("simple_cnn").build().state_dict()


def simple_cnn_spec_json() -> str:
    from exporter.spec import ModelSpec

    return ModelSpec("simple_cnn", 10, 3, 32, 32, CIFAR_MEAN, CIFAR_STD).to_json()


def tiny_onnx(batch="batch", opset: int = 17, spec_json: str | None = "default", two_inputs: bool = False):
    """A small, valid ONNX classifier (conv, relu, pool, gemm) for 3x32x32 inputs, built by hand (fast, no torch)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "conv.weight"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "conv.bias"),
        numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc.weight"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "fc.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc"),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [batch, 10]))
        nodes[-1].output[0] = "g"
        nodes.append(helper.make_node("Add", ["g", "extra"], ["logits"], name="add"))
    graph = helper.make_graph(
        nodes, "tiny", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if spec_json is not None:
        prop = model.metadata_props.add()
        prop.key, prop.value = "cnnexport.spec", simple_cnn_spec_json() if spec_json == "default" else spec_json
    return model


def save_onnx(model, path: Path, **kwargs) -> Path:
    import onnx

    onnx.save_model(model, str(path), **kwargs)
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _recipe(c: Corpus, name: str, text: str | bytes) -> Path:
    path = c.path(f"recipes/{name}.yaml")
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _run_args(c: Corpus, recipe: Path | str, case_id: str, *extra: str, ckpt: Path | None = None) -> tuple[str, ...]:
    return ("run", str(ckpt or c.good_ckpt), "--recipe", str(recipe), "-o", c.out(f"run-{case_id}"), *extra)


# --------------------------------------------------------------------------- the cases

Builder = Callable[[Corpus, str], Case]
BUILDERS: list[tuple[str, str, Builder]] = []
NEEDS: dict[str, str] = {}  # case id -> the optional package that writes its files


def case(case_id: str, input_kind: str, needs: str = ""):
    assert input_kind in INPUT_KINDS, input_kind

    def register(fn):
        BUILDERS.append((case_id, input_kind, fn))
        if needs:
            NEEDS[case_id] = needs
        return fn

    return register


def _bad(c_id: str, kind: str, args, words, code: int = EXIT_BAD_INPUT, **kw) -> Case:
    return Case(c_id, kind, tuple(str(a) for a in args), code, tuple(words), **kw)


# ---- checkpoints


@case("ckpt-missing", "checkpoint")
def _(c, i):
    return _bad(i, "checkpoint", c.onnx_args(c.inputs / "nope.pt"), ["nope.pt", "does not exist"])


@case("ckpt-zero-bytes", "checkpoint")
def _(c, i):
    path = c.path("zero.pt")
    path.write_bytes(b"")
    return _bad(i, "checkpoint", c.onnx_args(path), ["zero.pt", "empty", "0 bytes"])


@case("ckpt-truncated", "checkpoint")
def _(c, i):
    path = c.path("truncated.pt")
    path.write_bytes(c.good_ckpt.read_bytes())
    _truncate(path)
    return _bad(i, "checkpoint", c.onnx_args(path), ["truncated.pt", "truncated or corrupt"])


@case("ckpt-random-bytes", "checkpoint")
def _(c, i):
    path = c.path("random.pt")
    path.write_bytes(random.Random(1234).randbytes(4096))
    return _bad(i, "checkpoint", ("inspect", path), ["random.pt", "not a PyTorch checkpoint"])


@case("ckpt-zip-not-torch", "checkpoint")
def _(c, i):
    path = c.path("foreign.pth")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a model")
        zf.writestr("weights.csv", "1,2,3\n")
    return _bad(i, "checkpoint", c.onnx_args(path), ["foreign.pth", "not a PyTorch checkpoint"])


@case("ckpt-csv-text", "checkpoint")
def _(c, i):
    path = c.path("log.pt")
    path.write_text("epoch,loss\n1,0.93\n2,0.71\n")
    return _bad(i, "checkpoint", ("inspect", path), ["log.pt", "not a PyTorch checkpoint"])


@case("ckpt-nan-weights", "checkpoint")
def _(c, i):
    import torch

    sd = {k: v.clone() for k, v in c.state_dict.items()}
    sd["features.0.0.weight"][0, 0, 0, 0] = float("nan")
    path = c.path("nan.pt")
    torch.save(sd, path)
    return _bad(i, "checkpoint", c.onnx_args(path), ["NaN", "features.0.0.weight", "diverged"])


@case("ckpt-inf-weights", "checkpoint")
def _(c, i):
    import torch

    sd = {k: v.clone() for k, v in c.state_dict.items()}
    sd["classifier.2.bias"][3] = float("-inf")
    path = c.path("inf.pt")
    torch.save(sd, path)
    return _bad(i, "checkpoint", c.onnx_args(path), ["infinite", "classifier.2.bias"])


@case("ckpt-int64-weights", "checkpoint")
def _(c, i):
    import torch

    path = c.path("int64.pt")
    torch.save({k: (v * 100).to(torch.int64) if v.is_floating_point() else v for k, v in c.state_dict.items()}, path)
    return _bad(i, "checkpoint", c.onnx_args(path), ["int64", "floating-point"])


@case("ckpt-bool-weights", "checkpoint")
def _(c, i):
    import torch

    path = c.path("bool.pt")
    torch.save({k: (v > 0) if v.is_floating_point() else v for k, v in c.state_dict.items()}, path)
    return _bad(i, "checkpoint", ("inspect", path, "--arch", "simple_cnn"), ["bool", "floating-point"])


@case("ckpt-keys-of-another-arch", "checkpoint")
def _(c, i):
    import torch

    from exporter import architectures

    path = c.path("lenet_keys.pt")
    torch.manual_seed(0)
    torch.save(architectures.get("lenet5").build().state_dict(), path)
    return _bad(i, "checkpoint", c.onnx_args(path), ["does not fit architecture simple_cnn", "missing", "unexpected"])


@case("ckpt-keys-of-no-registry-arch", "checkpoint")
def _(c, i):
    import torch

    path = c.path("unknown_keys.pt")
    torch.save({"encoder.proj.weight": torch.zeros(4, 4), "head.weight": torch.zeros(2, 4)}, path)
    return _bad(i, "checkpoint", ("inspect", path), ["no registry architecture", "--arch"])


@case("ckpt-classifier-shape-mismatch", "checkpoint")
def _(c, i):
    import torch

    from exporter import architectures

    path = c.path("twelve.pt")
    torch.manual_seed(0)
    torch.save(architectures.get("simple_cnn").build(num_classes=12).state_dict(), path)
    args = ("inspect", path, "--arch", "simple_cnn", "--arch-kwargs", '{"num_classes": 10}')
    return _bad(i, "checkpoint", args, ["shape mismatch", "classifier.2.weight"])


@case("ckpt-dict-without-weights", "checkpoint")
def _(c, i):
    import torch

    path = c.path("history.pt")
    torch.save({"epoch": 12, "lr": 0.01, "history": [0.9, 0.7]}, path)
    return _bad(i, "checkpoint", c.onnx_args(path), ["without model weights", "epoch"])


@case("ckpt-scalar", "checkpoint")
def _(c, i):
    import torch

    path = c.path("scalar.pt")
    torch.save(42, path)
    return _bad(i, "checkpoint", ("inspect", path), ["holds a int", "not a model"])


@case("ckpt-directory", "checkpoint")
def _(c, i):
    path = c.path("folder.pt")
    path.mkdir()
    return _bad(i, "checkpoint", c.onnx_args(path), ["folder.pt", "is a directory"])


@case("ckpt-safetensors-garbage", "checkpoint")
def _(c, i):
    path = c.path("weights.safetensors")
    path.write_bytes(b'\x20\x00\x00\x00\x00\x00\x00\x00{"a": [' + random.Random(5).randbytes(200))
    return _bad(i, "checkpoint", c.onnx_args(path), ["weights.safetensors", "not a readable safetensors"])


@case("ckpt-torchscript-truncated", "checkpoint")
def _(c, i):
    import warnings

    import torch

    path = c.path("scripted.ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(path))
    _truncate(path)
    return _bad(i, "checkpoint", ("inspect", path), ["scripted.ts", "truncated or corrupt"])


@case("ckpt-hostile-exec", "checkpoint")
def _(c, i):
    path, marker = c.path("evil.pt"), c.marker(i)
    save_hostile(path, marker, "exec")
    return _bad(i, "checkpoint", c.onnx_args(path), ["evil.pt", "--trust-pickle", "references exec"], markers=(str(marker),))


@case("ckpt-hostile-os-system-plain-pickle", "checkpoint")
def _(c, i):
    path, marker = c.path("evil_plain.pkl"), c.marker(i)
    save_hostile(path, marker, "system", plain_pickle=True)
    return _bad(i, "checkpoint", ("inspect", path), ["evil_plain.pkl", "--trust-pickle"], markers=(str(marker),))


@case("ckpt-hostile-beside-real-weights", "checkpoint")
def _(c, i):
    path, marker = c.path("evil_dict.pth"), c.marker(i)
    save_hostile(path, marker, "exec", beside=c.state_dict)
    return _bad(i, "checkpoint", c.onnx_args(path), ["evil_dict.pth", "--trust-pickle"], markers=(str(marker),))


@case("ckpt-pickle-of-missing-module", "checkpoint")
def _(c, i):
    path = c.path("whole_gone.pt")
    save_pickle_of_missing_module(path, "cnnexport_corpus_vanished_models")
    args = ("inspect", path, "--trust-pickle")
    return _bad(i, "checkpoint", args, ["cnnexport_corpus_vanished_models", "cannot be imported"])


@case("ckpt-pickle-of-missing-module-untrusted", "checkpoint")
def _(c, i):
    path = c.path("whole_gone2.pt")
    save_pickle_of_missing_module(path, "cnnexport_corpus_vanished_models2")
    return _bad(i, "checkpoint", c.onnx_args(path), ["--trust-pickle", "cnnexport_corpus_vanished_models2.GoneNet"])


# ---- ONNX models


def _simplify(c: Corpus, path: Path, *extra: str) -> tuple[str, ...]:
    return ("simplify", str(path), "-o", c.out("s.onnx"), *extra)


@case("onnx-truncated", "onnx")
def _(c, i):
    path = c.path("truncated.onnx")
    path.write_bytes(c.good_onnx.read_bytes())
    _truncate(path)
    return _bad(i, "onnx", _simplify(c, path), ["truncated.onnx", "cannot be loaded"])


@case("onnx-zero-bytes", "onnx")
def _(c, i):
    path = c.path("zero.onnx")
    path.write_bytes(b"")
    return _bad(i, "onnx", _simplify(c, path), ["zero.onnx", "cannot be loaded"])


@case("onnx-random-bytes", "onnx")
def _(c, i):
    path = c.path("random.onnx")
    path.write_bytes(random.Random(7).randbytes(2048))
    return _bad(
        i, "onnx", ("verify", path, "--checkpoint", c.good_ckpt, "--arch", "simple_cnn"), ["random.onnx", "cannot be loaded"]
    )


@case("onnx-fixed-batch", "onnx")
def _(c, i):
    path = save_onnx(tiny_onnx(batch=1), c.path("fixed_batch.onnx"))
    return _bad(i, "onnx", _simplify(c, path), ["batch dimension is fixed to 1"], code=EXIT_VERIFICATION_FAILED)


@case("onnx-no-batch-dimension", "onnx")
def _(c, i):
    from onnx import TensorProto, helper

    model = tiny_onnx()
    # a CHW input with no batch axis at all: the graph flattens it and takes the first 10 values
    del model.graph.node[:]
    model.graph.node.extend(
        [
            helper.make_node("Flatten", ["input"], ["f"], axis=0),
            helper.make_node("Slice", ["f", "starts", "ends", "axes"], ["logits"]),
        ]
    )
    del model.graph.initializer[:]
    import numpy as np
    from onnx import numpy_helper

    model.graph.initializer.extend(
        [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("starts", 0), ("ends", 10), ("axes", 1))]
    )
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [3, 32, 32]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10]))
    path = save_onnx(model, c.path("chw.onnx"))
    return _bad(i, "onnx", _simplify(c, path), ["batch dimension is fixed to 3"], code=EXIT_VERIFICATION_FAILED)


@case("onnx-external-data-missing", "onnx")
def _(c, i):
    folder = c.path("external/x").parent
    path = folder / "split.onnx"
    save_onnx(
        tiny_onnx(), path, save_as_external_data=True, all_tensors_to_one_file=True, location="split.onnx.data", size_threshold=0
    )
    (folder / "split.onnx.data").unlink()
    return _bad(i, "onnx", _simplify(c, path), ["split.onnx", "cannot be loaded", "split.onnx.data"])


@case("onnx-opset-rejected", "onnx")
def _(c, i):
    path = save_onnx(tiny_onnx(opset=99), c.path("opset99.onnx"))
    return _bad(
        i, "onnx", ("quantize", path, "--calib", c.good_npy, "-o", c.out("q.onnx")), ["opset99.onnx", "cannot be loaded", "opset"]
    )


@case("onnx-two-inputs", "onnx")
def _(c, i):
    path = save_onnx(tiny_onnx(two_inputs=True), c.path("two_inputs.onnx"))
    return _bad(i, "onnx", _simplify(c, path), ["2 inputs", "single-input"])


@case("onnx-no-input-spec", "onnx")
def _(c, i):
    path = save_onnx(tiny_onnx(spec_json=None), c.path("bare.onnx"))
    return _bad(i, "onnx", _simplify(c, path), ["no cnnexport input spec", "--checkpoint"])


@case("onnx-spec-not-json", "onnx")
def _(c, i):
    path = save_onnx(tiny_onnx(spec_json="{not json"), c.path("badmeta.onnx"))
    return _bad(
        i,
        "onnx",
        ("verify", path, "--checkpoint", c.good_ckpt, "--arch", "simple_cnn"),
        ["badmeta.onnx", "cnnexport.spec", "not JSON"],
    )


@case("onnx-spec-missing-fields", "onnx")
def _(c, i):
    path = save_onnx(tiny_onnx(spec_json='{"arch": "simple_cnn"}'), c.path("halfmeta.onnx"))
    return _bad(i, "onnx", _simplify(c, path), ["stored input spec is malformed"])


@case("artifact-unknown-kind", "onnx")
def _(c, i):
    path = c.path("model.bin")
    path.write_bytes(c.good_onnx.read_bytes())
    return _bad(
        i, "onnx", ("verify", path, "--checkpoint", c.good_ckpt, "--arch", "simple_cnn"), ["model.bin", "cannot tell what kind"]
    )


# ---- Core ML packages (read by the MIL interpreter on Linux)


def _mlpackage(c: Corpus, name: str) -> Path:
    pkg = c.path(f"{name}.mlpackage/Data/com.apple.CoreML/weights/x").parent.parent.parent.parent
    return pkg


@case("mlpackage-manifest-broken", "mlpackage")
def _(c, i):
    pkg = _mlpackage(c, "broken_manifest")
    (pkg / "Manifest.json").write_text("{broken")
    return _bad(
        i,
        "mlpackage",
        ("verify", pkg, "--checkpoint", c.good_ckpt, "--arch", "simple_cnn"),
        ["broken_manifest.mlpackage", "Manifest.json"],
    )


@case("mlpackage-weights-missing", "mlpackage")
def _(c, i):
    pkg = _mlpackage(c, "no_weights")
    (pkg / "Manifest.json").write_text(
        json.dumps(
            {
                "fileFormatVersion": "1.0.0",
                "itemInfoEntries": {
                    "A": {
                        "author": "com.apple.CoreML",
                        "description": "CoreML Model Specification",
                        "name": "model.mlmodel",
                        "path": "com.apple.CoreML/model.mlmodel",
                    },
                    "B": {
                        "author": "com.apple.CoreML",
                        "description": "CoreML Model Weights",
                        "name": "weights",
                        "path": "com.apple.CoreML/weights",
                    },
                },
                "rootModelIdentifier": "A",
            }
        )
    )
    (pkg / "Data/com.apple.CoreML/model.mlmodel").write_bytes(b"")
    return _bad(i, "mlpackage", ("verify", pkg, "--checkpoint", c.good_ckpt, "--arch", "simple_cnn"), ["no_weights.mlpackage"])


# ---- recipes


@case("recipe-yaml-syntax", "recipe")
def _(c, i):
    return _bad(i, "recipe", _run_args(c, _recipe(c, i, "stages: [onnx\n"), i), ["not valid YAML at line"])


@case("recipe-unknown-key", "recipe")
def _(c, i):
    return _bad(
        i,
        "recipe",
        _run_args(c, _recipe(c, i, "stages:\n  onnx: {enabled: true, opsett: 13}\n"), i),
        ["stages.onnx.opsett", "unknown key"],
    )


@case("recipe-two-problems-both-named", "recipe")
def _(c, i):
    text = "stages:\n  onnx: {enabled: true, opset: 17, dynamic_bach: true}\n"
    return _bad(
        i, "recipe", _run_args(c, _recipe(c, i, text), i), ["2 problems", "stages.onnx.opset", "stages.onnx.dynamic_bach"]
    )


@case("recipe-wrong-type", "recipe")
def _(c, i):
    return _bad(
        i, "recipe", _run_args(c, _recipe(c, i, "calibration:\n  samples: lots\n"), i), ["calibration.samples", "integer"]
    )


@case("recipe-output-name-escapes", "recipe")
def _(c, i):
    return _bad(
        i, "recipe", _run_args(c, _recipe(c, i, "outputs:\n  name: ../../escaped\n"), i), ["outputs.name", "plain file name"]
    )


@case("recipe-output-name-absolute", "recipe")
def _(c, i):
    return _bad(
        i,
        "recipe",
        _run_args(c, _recipe(c, i, f"outputs:\n  name: {c.root}/elsewhere\n"), i),
        ["outputs.name", "plain file name"],
    )


@case("recipe-output-name-hidden", "recipe")
def _(c, i):
    return _bad(i, "recipe", _run_args(c, _recipe(c, i, "outputs:\n  name: .cnnexport\n"), i), ["outputs.name", "leading dot"])


@case("recipe-not-a-mapping", "recipe")
def _(c, i):
    return _bad(i, "recipe", _run_args(c, _recipe(c, i, "- onnx\n- simplify\n"), i), ["must be a mapping"])


@case("recipe-recursive-alias", "recipe")
def _(c, i):
    return _bad(i, "recipe", _run_args(c, _recipe(c, i, "stages: &a [*a]\n"), i), ["stages", "dictionary"])


@case("recipe-not-utf8", "recipe")
def _(c, i):
    return _bad(i, "recipe", _run_args(c, _recipe(c, i, "name: caf\xe9\n".encode("latin-1")), i), ["cannot be read"])


@case("recipe-missing", "recipe")
def _(c, i):
    return _bad(i, "recipe", _run_args(c, c.inputs / "no-such-recipe.yaml", i), ["does not exist", "release"])


@case("recipe-with-unreadable-checkpoint", "recipe")
def _(c, i):
    path = c.path("zero_for_run.pt")
    path.write_bytes(b"")
    return _bad(i, "recipe", _run_args(c, "server-onnx-cpu", i, "-j", "2", ckpt=path), ["zero_for_run.pt", "empty"])


@case("recipe-labels-not-utf8", "recipe")
def _(c, i):
    labels = c.path("latin1_labels.txt")
    labels.write_bytes("caf\xe9\n".encode("latin-1") * 10)
    recipe = _recipe(c, i, f"model:\n  arch: simple_cnn\n  labels: {labels}\n")
    return _bad(i, "recipe", _run_args(c, recipe, i), ["latin1_labels.txt", "UTF-8"])


@case("recipe-mean-count", "recipe")
def _(c, i):
    recipe = _recipe(c, i, "model:\n  arch: simple_cnn\n  mean: [0.5, 0.5]\n")
    return _bad(i, "recipe", _run_args(c, recipe, i), ["2 values", "3 input channels"])


# ---- calibration / evaluation / verification data


def _quantize(c: Corpus, calib, *extra) -> tuple[str, ...]:
    return ("quantize", str(c.good_onnx), "--calib", str(calib), "-o", c.out("q.onnx"), *extra)


def _image(path: Path, mode: str = "RGB") -> None:
    from PIL import Image

    Image.new(mode, (40, 36), 128 if mode == "L" else (200, 120, 40)).save(path)


@case("calib-empty-folder", "data")
def _(c, i):
    folder = c.path("empty_images/x").parent
    folder.mkdir(exist_ok=True)
    return _bad(i, "data", _quantize(c, folder), ["empty_images", "no images"])


@case("calib-corrupt-image", "data")
def _(c, i):
    folder = c.path("corrupt_images/x").parent
    _image(folder / "ok.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return _bad(i, "data", _quantize(c, folder), ["broken.jpg", "cannot be read"])


@case("calib-greyscale-for-rgb-model", "data")
def _(c, i):
    folder = c.path("grey_images/x").parent
    _image(folder / "grey.png", "L")
    return _bad(i, "data", _quantize(c, folder), ["grey.png", "greyscale", "3-channel"])


@case("calib-npy-wrong-shape", "data")
def _(c, i):
    import numpy as np

    path = c.path("wrong_shape.npy")
    np.save(path, np.zeros((4, 3, 16, 16), np.float32))
    return _bad(i, "data", _quantize(c, path), ["wrong_shape.npy", "(4, 3, 16, 16)", "expected (N, 3, 32, 32)"])


@case("calib-npy-of-ints", "data")
def _(c, i):
    import numpy as np

    path = c.path("ints.npy")
    np.save(path, np.zeros((4, 3, 32, 32), np.int64))
    return _bad(i, "data", _quantize(c, path), ["ints.npy", "int64", "float"])


@case("calib-npy-with-nan", "data")
def _(c, i):
    import numpy as np

    path = c.path("nan.npy")
    data = np.zeros((8, 3, 32, 32), np.float32)
    data[3, 1, 2, 2] = np.nan
    np.save(path, data)
    return _bad(i, "data", _quantize(c, path, "--samples", "4", "--holdout", "4"), ["nan.npy", "NaN"])


@case("calib-npy-not-an-array", "data")
def _(c, i):
    path = c.path("text.npy")
    path.write_text("1,2,3\n")
    return _bad(i, "data", _quantize(c, path), ["text.npy", "not a readable"])


@case("calib-pickled-object-array", "data")
def _(c, i):
    import numpy as np

    path, marker = c.path("objects.npy"), c.marker(i)
    np.save(path, np.array([ExecPayload(marker)], dtype=object), allow_pickle=True)
    return _bad(i, "data", _quantize(c, path), ["objects.npy", "not a readable"], markers=(str(marker),))


@case("eval-folder-without-labels", "data")
def _(c, i):
    folder = c.path("flat_images/x").parent
    for n in range(3):
        _image(folder / f"{n}.png")
    return _bad(i, "data", _quantize(c, c.good_npy, "--eval", folder), ["flat_images", "no labels"])


@case("eval-missing", "data")
def _(c, i):
    return _bad(i, "data", _quantize(c, c.good_npy, "--eval", c.inputs / "no_eval_here"), ["no_eval_here", "does not exist"])


@case("eval-npz-label-count", "data")
def _(c, i):
    import numpy as np

    path = c.path("labelled.npz")
    np.savez(path, inputs=np.zeros((4, 3, 32, 32), np.float32), labels=np.arange(3))
    return _bad(i, "data", ("eval", c.good_onnx, "--data", path), ["labelled.npz", "3 labels for 4 inputs"])


@case("eval-npz-truncated", "data")
def _(c, i):
    import numpy as np

    path = c.path("cut.npz")
    np.savez(path, inputs=np.zeros((4, 3, 32, 32), np.float32), labels=np.arange(4))
    _truncate(path, 0.6)
    return _bad(i, "data", ("eval", c.good_onnx, "--data", path), ["cut.npz", "not a readable"])


@case("images-npy-wrong-shape", "data")
def _(c, i):
    import numpy as np

    path = c.path("images_wrong.npy")
    np.save(path, np.zeros((2, 1, 32, 32), np.float32))
    return _bad(i, "data", _simplify(c, c.good_onnx, "--images", str(path)), ["images_wrong.npy", "(2, 1, 32, 32)"])


@case("images-empty-npz", "data")
def _(c, i):
    import numpy as np

    path = c.path("nothing.npz")
    np.savez(path)
    return _bad(i, "data", _simplify(c, c.good_onnx, "--images", str(path)), ["nothing.npz", "not a readable"])


@case("images-folder-empty", "data")
def _(c, i):
    folder = c.path("no_images/x").parent
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("no pictures here")
    return _bad(i, "data", _simplify(c, c.good_onnx, "--images", str(folder)), ["no_images", "contains no images"])


# ---- labels files


def _labels(c: Corpus, name: str, data: bytes) -> Path:
    path = c.path(name)
    path.write_bytes(data)
    return path


@case("labels-wrong-count", "labels")
def _(c, i):
    path = _labels(c, "three.txt", b"cat\ndog\nemu\n")
    return _bad(i, "labels", (*c.onnx_args(c.good_ckpt), "--labels", path), ["3 entries", "10 classes"])


@case("labels-not-utf8", "labels")
def _(c, i):
    path = _labels(c, "latin1.txt", "caf\xe9\n".encode("latin-1") * 10)
    return _bad(i, "labels", (*c.onnx_args(c.good_ckpt), "--labels", path), ["latin1.txt", "UTF-8"])


@case("labels-empty", "labels")
def _(c, i):
    path = _labels(c, "blank.txt", b"\n  \n\n")
    return _bad(i, "labels", ("inspect", c.good_ckpt, "--arch", "simple_cnn", "--labels", path), ["blank.txt", "empty"])


@case("labels-binary", "labels")
def _(c, i):
    path = _labels(c, "binary.txt", random.Random(3).randbytes(300))
    return _bad(i, "labels", ("inspect", c.good_ckpt, "--arch", "simple_cnn", "--labels", path), ["binary.txt", "UTF-8"])


# ---- command-line strings


def _cli(c: Corpus, *extra: str) -> tuple[str, ...]:
    return (*c.onnx_args(c.good_ckpt), *extra)


CLI_STRINGS = [
    ("cli-batch-sizes-zero", ("--batch-sizes", "0,4"), ["--batch-sizes", "positive"]),
    ("cli-batch-sizes-words", ("--batch-sizes", "1,,x"), ["--batch-sizes", "1,,x"]),
    ("cli-batch-sizes-negative", ("--batch-sizes", "-1"), ["--batch-sizes", "positive"]),
    ("cli-batch-sizes-empty", ("--batch-sizes", ", ,"), ["--batch-sizes"]),
    ("cli-input-shape-two-dims", ("--input-shape", "3x32"), ["--input-shape", "3x32"]),
    ("cli-input-shape-huge", ("--input-shape", "3,99999,99999"), ["3x99999x99999", "--input-shape"]),
    ("cli-input-shape-float", ("--input-shape", "3,32.5,32"), ["--input-shape"]),
    ("cli-mean-nan", ("--mean", "nan,0.5,0.5"), ["--mean", "finite"]),
    ("cli-mean-separator", ("--mean", "0.5;0.5;0.5"), ["--mean", "numbers"]),
    ("cli-mean-count", ("--mean", "0.5,0.5"), ["--mean has 2 values", "3 input channels"]),
    ("cli-std-zero", ("--std", "0.2,0.2,0"), ["--std", "positive"]),
    ("cli-std-inf", ("--std", "inf"), ["--std", "finite"]),
    ("cli-arch-kwargs-not-json", ("--arch-kwargs", "{num_classes: 7}"), ["--arch-kwargs", "JSON"]),
]

for _id, _extra, _words in CLI_STRINGS:
    case(_id, "cli")(lambda c, i, extra=_extra, words=_words: _bad(i, "cli", _cli(c, *extra), words))


SET_STRINGS = [
    ("cli-set-no-equals", "stages.onnx.opset", ["--set", "key.path=value"]),
    ("cli-set-empty-key", "=5", ["--set", "key.path=value"]),
    ("cli-set-into-a-value", "name.x=1", ["--set name.x", "not a section"]),
    ("cli-set-section-to-scalar", "stages.onnx=3", ["stages.onnx", "dictionary"]),
    ("cli-set-unknown-key", "stages.int8.methodd=entropy", ["stages.int8.methodd", "unknown key"]),
    ("cli-set-wrong-type", "verify.batch_sizes=[0, 4]", ["verify.batch_sizes", "positive"]),
]

for _id, _assignment, _words in SET_STRINGS:
    case(_id, "cli")(lambda c, i, a=_assignment, words=_words: _bad(i, "cli", _run_args(c, "demo", i, "--set", a), words))


@case("cli-verify-precision", "cli")
def _(c, i):
    return _bad(i, "cli", ("verify", c.good_onnx, "--checkpoint", c.good_ckpt, "--precision", "fp64"), ["--precision", "fp32"])


@case("cli-tensorrt-batch-order", "cli")
def _(c, i):
    return _bad(i, "cli", ("tensorrt", c.good_onnx, "--batch", "8:4:2", "--emit-script", c.out("kit")), ["--batch", "8:4:2"])


@case("cli-coreml-batch", "cli")
def _(c, i):
    return _bad(
        i,
        "cli",
        ("coreml", c.good_ckpt, "--arch", "simple_cnn", "--batch", "0:4", "-o", c.out("m.mlpackage")),
        ["--batch", "0:4"],
    )


@case("cli-samples-not-int", "cli")
def _(c, i):
    return Case(
        i, "cli", _quantize(c, c.good_npy, "--samples", "many"), EXIT_BAD_INPUT, ("--samples", "valid integer"), usage=True
    )


# ---- output locations


@case("output-is-a-directory", "output")
def _(c, i):
    folder = c.path("a_folder.onnx")
    folder.mkdir()
    return _bad(i, "output", ("onnx", c.good_ckpt, "--arch", "simple_cnn", "-o", folder), ["a_folder.onnx", "is a directory"])


@case("output-under-a-file", "output")
def _(c, i):
    blocker = c.path("a_file.txt")
    blocker.write_text("a file, not a folder")
    return _bad(
        i,
        "output",
        ("onnx", c.good_ckpt, "--arch", "simple_cnn", "-o", blocker / "m.onnx"),
        ["cannot create output folder", "a_file.txt"],
    )


@case("output-overwrites-source", "output")
def _(c, i):
    return _bad(i, "output", ("simplify", c.good_onnx, "-o", c.good_onnx), ["is the ONNX model", "destroy"])


# ---- outputs that land on an input (issue 24): refused before any work, the input untouched


def _torchscript_ckpt(c: Corpus, name: str = "scripted.ts") -> Path:
    """A traced TorchScript checkpoint of simple_cnn (what `cnnexport torchscript` writes)."""
    import torch

    from exporter import architectures

    path = c.path(name)
    if not path.exists():
        model = architectures.get("simple_cnn").build().eval()
        torch.jit.trace(model, torch.zeros(1, 3, 32, 32)).save(str(path))
    return path


def _image_folder(c: Corpus, name: str) -> Path:
    folder = c.path(f"{name}/x").parent
    for n in range(2):
        _image(folder / f"{n}.png")
    return folder


HARM_WORDS = ("would destroy", "choose another output path")


@case("output-is-the-checkpoint", "output")
def _(c, i):
    return _bad(i, "output", ("onnx", c.good_ckpt, "--arch", "simple_cnn", "-o", c.good_ckpt), ["is the checkpoint", *HARM_WORDS])


@case("output-is-the-checkpoint-via-missing-dotdot", "output")
def _(c, i):
    return _bad(
        i,
        "output",
        ("onnx", c.good_ckpt, "--arch", "simple_cnn", "-o", c.inputs / "nowhere" / ".." / "good.pt"),
        ["is the checkpoint", *HARM_WORDS],
    )


@case("output-is-a-symlink-to-the-checkpoint", "output")
def _(c, i):
    link = c.path("link.onnx")
    if not link.is_symlink():
        os.symlink(c.good_ckpt.name, link)
    return _bad(i, "output", ("onnx", c.good_ckpt, "--arch", "simple_cnn", "-o", link), ["is the checkpoint", *HARM_WORDS])


@case("output-is-a-hardlink-to-the-checkpoint", "output")
def _(c, i):
    hard = c.path("hard.onnx")
    if not hard.exists():
        os.link(c.good_ckpt, hard)
    return _bad(i, "output", ("onnx", c.good_ckpt, "--arch", "simple_cnn", "-o", hard), ["is the checkpoint", *HARM_WORDS])


@case("output-is-the-calibration-file", "output")
def _(c, i):
    return _bad(
        i, "output", ("quantize", c.good_onnx, "--calib", c.good_npy, "-o", c.good_npy), ["the --calib data", *HARM_WORDS]
    )


@case("output-inside-the-calibration-folder", "output")
def _(c, i):
    folder = _image_folder(c, "calib_images")
    return _bad(i, "output", ("quantize", c.good_onnx, "--calib", folder, "-o", folder / "q.onnx"), ["inside the --calib data"])


@case("output-is-the-images-file", "output")
def _(c, i):
    return _bad(
        i,
        "output",
        ("onnx", c.good_ckpt, "--arch", "simple_cnn", "--images", c.good_npy, "-o", c.good_npy),
        ["the --images data", *HARM_WORDS],
    )


@case("output-is-the-labels-file", "output")
def _(c, i):
    labels = c.path("ten_labels.txt")
    labels.write_text("\n".join(f"class{n}" for n in range(10)) + "\n")
    return _bad(
        i,
        "output",
        ("onnx", c.good_ckpt, "--arch", "simple_cnn", "--labels", labels, "-o", labels),
        ["the --labels file", *HARM_WORDS],
    )


@case("checkpoint-of-a-two-input-model", "checkpoint")
def _(c, i):
    import torch

    net = c.path("siamese_net.py")
    net.write_text(
        "import torch\nclass Siamese(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 3)\n    def forward(self, a, b):\n"
        "        return (self.conv(a) - self.conv(b)).mean((1, 2, 3))\n"
    )
    ckpt = c.path("siamese.pt")
    torch.manual_seed(0)
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.zeros(4)}, ckpt)
    return _bad(
        i,
        "checkpoint",
        ("onnx", ckpt, "--arch", f"{net}:Siamese", "-o", c.out(f"{i}.onnx")),
        ["takes 2 inputs", "forward(a, b)", "single-input"],
    )


@case("output-is-the-arch-file", "output")
def _(c, i):
    net = c.path("user_net.py")
    net.write_text("import torch\nclass Net(torch.nn.Module):\n    pass\n")
    return _bad(i, "output", ("onnx", c.good_ckpt, "--arch", f"{net}:Net", "-o", net), ["the --arch file", *HARM_WORDS])


@case("output-is-the-reference-checkpoint", "output")
def _(c, i):
    return _bad(
        i,
        "output",
        ("simplify", c.good_onnx, "--checkpoint", c.good_ckpt, "-o", c.good_ckpt),
        ["the --checkpoint reference", *HARM_WORDS],
    )


@case("output-quantize-over-its-onnx", "output")
def _(c, i):
    return _bad(
        i, "output", ("quantize", c.good_onnx, "--calib", c.good_npy, "-o", c.good_onnx), ["is the ONNX model", *HARM_WORDS]
    )


@case("output-report-is-the-checkpoint", "output")
def _(c, i):
    ckpt = c.path("m.onnx.report.json")
    ckpt.write_bytes(c.good_ckpt.read_bytes())
    return _bad(
        i,
        "output",
        ("onnx", ckpt, "--arch", "simple_cnn", "-o", c.inputs / "m.onnx"),
        ["m.onnx.report.json", "is the checkpoint"],
    )


@case("output-torchscript-default-is-the-torchscript-checkpoint", "output")
def _(c, i):
    return _bad(i, "output", ("torchscript", _torchscript_ckpt(c)), ["scripted.ts", "is the checkpoint", *HARM_WORDS])


@case("run-output-folder-holds-the-checkpoint-under-an-artifact-name", "output")
def _(c, i):
    return _bad(
        i, "output", ("run", _torchscript_ckpt(c), "--recipe", "release", "-o", c.inputs), ["scripted.ts", "is the checkpoint"]
    )


@case("run-output-inside-the-calibration-folder", "output")
def _(c, i):
    folder = _image_folder(c, "run_calib_images")
    return _bad(
        i,
        "output",
        ("run", c.good_ckpt, "--recipe", "release", "-o", folder / "dist", "--calib", folder, "--set", "model.arch=simple_cnn"),
        ["inside calibration.data"],
    )


@case("run-recipe-where-the-report-goes", "output")
def _(c, i):
    recipe = c.path("report.md")
    recipe.write_text("name: mine\nmodel: {arch: simple_cnn}\nstages:\n  onnx: {}\n")
    return _bad(i, "output", ("run", c.good_ckpt, "--recipe", recipe, "-o", c.inputs), ["report.md", "is the recipe"])


@case("run-output-folder-is-a-file", "output")
def _(c, i):
    return _bad(
        i,
        "output",
        ("run", c.good_ckpt, "--recipe", "release", "-o", c.good_npy, "--set", "model.arch=simple_cnn"),
        ["calib.npy"],
    )


# ---- every option checked before work, naming the flag or key and the range


OPTION_CASES = [
    ("cli-opset-99", ("onnx", "{ckpt}", "--arch", "simple_cnn", "--opset", "99", "-o", "{out}"), ["--opset", "18 to"], False),
    (
        "cli-opset-7-dynamo",
        ("onnx", "{ckpt}", "--arch", "simple_cnn", "--opset", "7", "-o", "{out}"),
        ["--opset", "--exporter legacy"],
        False,
    ),
    (
        "cli-opset-24-legacy",
        ("onnx", "{ckpt}", "--arch", "simple_cnn", "--exporter", "legacy", "--opset", "24", "-o", "{out}"),
        ["--opset", "7 to 23"],
        False,
    ),
    (
        "cli-min-top1-above-1",
        ("onnx", "{ckpt}", "--arch", "simple_cnn", "--min-top1", "1.5", "-o", "{out}"),
        ["--min-top1", "1"],
        False,
    ),
    (
        "cli-min-cosine-below-minus-1",
        ("onnx", "{ckpt}", "--arch", "simple_cnn", "--min-cosine", "-2", "-o", "{out}"),
        ["--min-cosine", "-1"],
        False,
    ),
    (
        "cli-max-rel-err-zero",
        ("onnx", "{ckpt}", "--arch", "simple_cnn", "--max-rel-err", "0", "-o", "{out}"),
        ["--max-rel-err", "0"],
        False,
    ),
    (
        "cli-verify-min-top1-above-1",
        ("verify", "{onnx}", "--checkpoint", "{ckpt}", "--arch", "simple_cnn", "--min-top1", "7"),
        ["--min-top1"],
        False,
    ),
    ("cli-seed-negative", ("onnx", "{ckpt}", "--arch", "simple_cnn", "--seed", "-1", "-o", "{out}"), ["--seed"], True),
    ("cli-opt-level-9", ("tensorrt", "{onnx}", "--opt-level", "9", "--emit-script", "{out}"), ["--opt-level", "5"], False),
    (
        "cli-max-drop-200",
        ("quantize", "{onnx}", "--calib", "{npy}", "--fallback", "auto", "--max-drop", "200", "-o", "{out}"),
        ["--max-drop", "100"],
        False,
    ),
    (
        "cli-holdout-negative",
        ("quantize", "{onnx}", "--calib", "{npy}", "--holdout", "-3", "-o", "{out}"),
        ["--holdout", "0"],
        False,
    ),
    ("cli-samples-zero", ("quantize", "{onnx}", "--calib", "{npy}", "--samples", "0", "-o", "{out}"), ["--samples", "1"], False),
    ("cli-method-unknown", ("quantize", "{onnx}", "--calib", "{npy}", "--method", "kl", "-o", "{out}"), ["--method"], True),
    (
        "cli-openvino-entropy",
        ("openvino", "{onnx}", "--precision", "int8", "--calib", "{npy}", "--method", "entropy", "-o", "{out}"),
        ["--method entropy", "NNCF"],
        False,
    ),
    (
        "cli-coreml-compress-bits",
        ("coreml", "{ckpt}", "--arch", "simple_cnn", "--compress", "palettize:99", "-o", "{out}"),
        ["palettize"],
        False,
    ),
    (
        "cli-tensorrt-workspace-unit",
        ("tensorrt", "{onnx}", "--workspace", "12Q", "--emit-script", "{out}"),
        ["--workspace"],
        False,
    ),
    ("cli-bench-threads-0", ("bench", "{onnx}", "--threads", "0"), ["--threads"], True),
    ("cli-bench-seconds-0", ("bench", "{onnx}", "--seconds", "0"), ["--seconds"], True),
    ("cli-eval-top-0", ("eval", "{onnx}", "--data", "digits", "--top", "0"), ["--top"], True),
    ("cli-eval-batch-size-0", ("eval", "{onnx}", "--data", "digits", "--batch-size", "0"), ["--batch-size"], True),
    ("cli-debug-samples-0", ("debug", "{onnx}", "--checkpoint", "{ckpt}", "--samples", "0"), ["--samples"], True),
    ("cli-run-jobs-0", ("run", "{ckpt}", "--recipe", "release", "--jobs", "0", "-o", "{out}"), ["--jobs"], True),
    ("cli-demo-epochs-0", ("demo", "--epochs", "0", "-o", "{out}"), ["--epochs"], True),
    (
        "cli-set-opset-99",
        ("run", "{ckpt}", "--recipe", "release", "--set", "stages.onnx.opset=99", "-o", "{out}"),
        ["stages.onnx.opset", "18 to"],
        False,
    ),
    (
        "cli-set-verify-seed-negative",
        ("run", "{ckpt}", "--recipe", "release", "--set", "verify.seed=-1", "-o", "{out}"),
        ["verify.seed"],
        False,
    ),
    (
        "cli-set-tolerance-above-1",
        ("run", "{ckpt}", "--recipe", "release", "--set", "verify.int8.min_top1=2", "-o", "{out}"),
        ["verify.int8.min_top1"],
        False,
    ),
    (
        "cli-set-calibration-samples-zero",
        ("run", "{ckpt}", "--recipe", "release", "--set", "calibration.samples=0", "-o", "{out}"),
        ["calibration.samples"],
        False,
    ),
    (
        "cli-set-opt-level-9",
        ("run", "{ckpt}", "--recipe", "release", "--set", "stages.tensorrt.optimization_level=9", "-o", "{out}"),
        ["stages.tensorrt.optimization_level"],
        False,
    ),
]


def _option_case(c: Corpus, i: str, args, words, usage: bool) -> Case:
    fill = {"{ckpt}": str(c.good_ckpt), "{onnx}": str(c.good_onnx), "{npy}": str(c.good_npy), "{out}": c.out(i)}
    return Case(i, "cli", tuple(fill.get(a, a) for a in args), EXIT_BAD_INPUT, tuple(words), usage=usage)


for _id, _args, _words, _usage in OPTION_CASES:
    case(_id, "cli")(lambda c, i, a=_args, w=_words, u=_usage: _option_case(c, i, a, w, u))


# ---- data sources opened and counted before the first stage (a checkpoint given to an ONNX verb exports nothing first)


def _quantize_ckpt(c: Corpus, calib, *extra) -> tuple[str, ...]:
    return ("quantize", str(c.good_ckpt), "--arch", "simple_cnn", "--calib", str(calib), *extra)


@case("quantize-ckpt-empty-calib-folder", "data")
def _(c, i):
    folder = c.path("empty_for_ckpt/x").parent
    folder.mkdir(exist_ok=True)
    return _bad(i, "data", _quantize_ckpt(c, folder), ["--calib", "no images"])


@case("quantize-ckpt-corrupt-calib-image", "data")
def _(c, i):
    folder = c.path("corrupt_for_ckpt/x").parent
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return _bad(i, "data", _quantize_ckpt(c, folder), ["--calib", "cannot be read"])


@case("quantize-ckpt-missing-calib", "data")
def _(c, i):
    return _bad(i, "data", _quantize_ckpt(c, c.inputs / "no_such_calib"), ["--calib", "does not exist"])


@case("quantize-ckpt-eval-without-labels", "data")
def _(c, i):
    return _bad(i, "data", _quantize_ckpt(c, c.good_npy, "--eval", c.good_npy), ["--eval", "no labels"])


@case("openvino-ckpt-int8-empty-calib", "data")
def _(c, i):
    folder = c.path("empty_for_openvino/x").parent
    folder.mkdir(exist_ok=True)
    return _bad(
        i,
        "data",
        ("openvino", c.good_ckpt, "--arch", "simple_cnn", "--precision", "int8", "--calib", folder),
        ["--calib", "no images"],
    )


@case("onnx-images-missing", "data")
def _(c, i):
    return _bad(
        i,
        "data",
        ("onnx", c.good_ckpt, "--arch", "simple_cnn", "--images", c.inputs / "absent_images", "-o", c.out("x.onnx")),
        ["--images", "does not exist"],
    )


@case("run-evaluation-without-labels", "data")
def _(c, i):
    return _bad(
        i,
        "data",
        _run_args(
            c, "release", i, "--calib", str(c.good_npy), "--set", "model.arch=simple_cnn",
            "--set", f"evaluation.data={c.good_npy}",
        ),
        ["evaluation.data", "no labels"],
    )  # fmt: skip


@case("run-verify-images-missing", "data")
def _(c, i):
    return _bad(
        i,
        "data",
        _run_args(c, "release", i, "--set", "model.arch=simple_cnn", "--set", f"verify.images={c.inputs / 'absent_images'}"),
        ["verify.images", "does not exist"],
    )


@case("run-calib-empty-folder", "data")
def _(c, i):
    folder = c.path("empty_for_run/x").parent
    folder.mkdir(exist_ok=True)
    return _bad(
        i,
        "data",
        _run_args(c, "release", i, "--calib", str(folder), "--set", "model.arch=simple_cnn"),
        ["calibration.data", "no images"],
    )


# ---- checkpoint forms torch itself writes that are refused (tests/corpus/torch_forms.py writes them)

TORCH_FORM_IDS = (
    "torch-quantized-state-dict",
    "torch-quantized-state-dict-arch",
    "torch-quantized-training-dict",
    "torch-quantized-module",
    "torch-quantized-module-trusted",
    "torch-quantized-module-legacy",
    "torch-quantized-torchscript",
    "torch-meta-state-dict",
    "torch-meta-state-dict-arch",
    "torch-meta-module-trusted",
    "torch-meta-module",
)


def _torch_form(c: Corpus, i: str) -> Case:
    if not hasattr(c, "torch_forms"):  # written once per corpus: the converted model takes a few seconds
        from tests.corpus.torch_forms import write_torch_form_cases

        c.torch_forms = {cid: (args, code, words) for cid, args, code, words in write_torch_form_cases(c.inputs / "torch_forms")}
    args, code, words = c.torch_forms[i]
    return Case(i, "checkpoint", tuple(args), code, tuple(words))


for _id in TORCH_FORM_IDS:
    case(_id, "checkpoint")(_torch_form)


# ---- detectors: Ultralytics YOLO checkpoints (written here by Ultralytics from its yaml, untrained, 64 px) and
# the detection data `cnnexport eval --data` reads; skipped with the reason where Ultralytics is not importable

YOLO = "ultralytics"
YOLO_CLASSES = ("a", "b", "c")


def save_yolo(path: Path, yaml: str = "yolo11n.yaml", imgsz: int = 64, **beside) -> Path:
    """What Ultralytics' trainer saves (its model in float16, train_args, version) for a model built from its yaml."""
    import logging

    import torch
    import ultralytics
    from ultralytics.nn import tasks

    task = tasks.guess_model_task(tasks.yaml_model_load(yaml))
    model_class = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel}[task]
    logger = logging.getLogger("ultralytics")  # its "Overriding model.yaml nc=80 with nc=3" line: not in the corpus's output
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model = model_class(yaml, nc=len(YOLO_CLASSES), verbose=False)
    finally:
        logger.setLevel(level)
    model.names = dict(enumerate(YOLO_CLASSES))
    torch.save(
        {"model": model.half(), "ema": None, "train_args": {"imgsz": imgsz}, "version": ultralytics.__version__, **beside}, path
    )
    return path


def _yolo(c: Corpus) -> Path:
    """The good best.pt the detection cases share (written once per corpus)."""
    path = c.inputs / "yolo" / "best.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_yolo(path)
    return path


def _detect_data(
    c: Corpus, name: str, yaml: str = "val: images/val\nnames: [a, b, c]\n", label: str = "1 0.5 0.5 0.25 0.5\n"
) -> Path:
    """A detection data set in Ultralytics' layout: images/val/a.png (40 x 36), labels/val/a.txt, data.yaml."""
    root = c.path(f"{name}/images/val/a.png").parent.parent.parent
    _image(root / "images" / "val" / "a.png")
    (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "val" / "a.txt").write_text(label)
    (root / "data.yaml").write_text(yaml)
    return root


def _eval_yolo(c: Corpus, data: Path | str) -> tuple[str, ...]:
    return ("eval", str(_yolo(c)), "--data", str(data))


def _coco(c: Corpus, name: str, text: str) -> Path:
    path = c.path(f"{name}/instances_val.json")
    path.write_text(text)
    return path


def _coco_json(file_name: str = "a.png", categories: int = 3) -> str:
    return json.dumps(
        {
            "images": [{"id": 1, "file_name": file_name, "width": 40, "height": 36}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "iscrowd": 0}],
            "categories": [{"id": k + 1, "name": YOLO_CLASSES[k % 3]} for k in range(categories)],
        }
    )


@case("yolo-truncated", "checkpoint", needs=YOLO)
def _(c, i):
    path = c.path("yolo_truncated.pt")
    path.write_bytes(_yolo(c).read_bytes())
    _truncate(path)
    return _bad(i, "checkpoint", ("onnx", path, "-o", c.out(f"{i}.onnx")), ["yolo_truncated.pt", "truncated or corrupt"])


@case("yolo-hostile-beside-the-model", "checkpoint", needs=YOLO)
def _(c, i):
    path, marker = c.path("hostile_best.pt"), c.marker(i)
    save_yolo(path, callback=SystemPayload(marker))
    return _bad(
        i,
        "checkpoint",
        ("onnx", path, "-o", c.out(f"{i}.onnx")),
        ["hostile_best.pt", "system", "refused without unpickling anything"],
        markers=(str(marker),),
    )


@case("yolo-names-a-function-not-a-module", "checkpoint", needs=YOLO)
def _(c, i):
    from ultralytics.nn import tasks

    path = c.path("yolo_function.pt")
    save_yolo(path, loader=tasks.yaml_model_load)  # pickled by reference: a callable from the allowed namespace
    return _bad(i, "checkpoint", ("inspect", path), ["yolo_function.pt", "yaml_model_load", "not a network module"])


@case("yolo-of-a-newer-ultralytics", "checkpoint", needs=YOLO)
def _(c, i):
    import torch
    from ultralytics.nn.modules import block

    class C9Future(torch.nn.Module):  # a block a later Ultralytics has and this one lacks
        def __init__(self):
            super().__init__()
            self.cv = torch.nn.Conv2d(3, 4, 1)

    C9Future.__module__, C9Future.__qualname__ = block.__name__, "C9Future"
    block.C9Future = C9Future
    path = c.path("yolo_newer.pt")
    try:
        save_yolo(path, future=C9Future())
    finally:
        del block.C9Future
    return _bad(
        i,
        "checkpoint",
        ("inspect", path),
        ["yolo_newer.pt", "C9Future", "does not have", "the Ultralytics version that wrote it"],
    )


@case("yolo-segment", "checkpoint", needs=YOLO)
def _(c, i):
    path = save_yolo(c.path("yolo_seg.pt"), "yolo11n-seg.yaml")
    return _bad(i, "checkpoint", ("onnx", path, "-o", c.out(f"{i}.onnx")), ["yolo_seg.pt", "SegmentationModel", "detect"])


@case("yolo-without-weights", "checkpoint", needs=YOLO)
def _(c, i):
    import torch
    from ultralytics.nn.modules.conv import Conv

    path = c.path("yolo_no_weights.pt")
    torch.save({"model": None, "ema": None, "optimizer": Conv(3, 8), "train_args": {"imgsz": 64}}, path)
    return _bad(i, "checkpoint", ("inspect", path), ["yolo_no_weights.pt", "without 'model' weights"])


@case("yolo-bare-model", "checkpoint", needs=YOLO)
def _(c, i):
    import torch

    path = c.path("yolo_bare.pt")
    torch.save(torch.load(_yolo(c), weights_only=False)["model"], path)
    return _bad(i, "checkpoint", ("inspect", path), ["yolo_bare.pt", "not a training dict"])


@case("yolo-eval-data-yaml-syntax", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_yaml_syntax", yaml="val: [images/val\nnames: {0: a\n")
    return _bad(i, "data", _eval_yolo(c, root / "data.yaml"), ["data.yaml", "not a readable data.yaml"])


@case("yolo-eval-data-yaml-not-a-mapping", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_yaml_list", yaml="- images/val\n- names\n")
    return _bad(i, "data", _eval_yolo(c, root), ["data.yaml", "not an Ultralytics data.yaml"])


@case("yolo-eval-data-yaml-no-val", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_yaml_no_val", yaml="train: images/train\nnames: [a, b, c]\n")
    return _bad(i, "data", _eval_yolo(c, root / "data.yaml"), ["data.yaml", "names no val"])


@case("yolo-eval-data-yaml-class-count", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_yaml_five", yaml="val: images/val\nnames: [a, b, c, d, e]\n")
    return _bad(i, "data", _eval_yolo(c, root / "data.yaml"), ["names 5 classes", "the model has 3"])


@case("yolo-eval-val-folder-missing", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_yaml_elsewhere", yaml="val: nowhere/val\nnames: [a, b, c]\n")
    return _bad(i, "data", _eval_yolo(c, root / "data.yaml"), ["nowhere", "does not exist"])


@case("yolo-eval-label-class-beyond-the-model", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_label_class_7", label="0 0.5 0.5 0.2 0.2\n7 0.3 0.3 0.1 0.1\n")
    return _bad(i, "data", _eval_yolo(c, root / "data.yaml"), ["a.txt", "holds class 7", "the model has 3 classes"])


@case("yolo-eval-label-not-numbers", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_label_words", label="0 0.5 half 0.2 0.2\n")
    return _bad(i, "data", _eval_yolo(c, root), ["a.txt", "not YOLO labels"])


@case("yolo-eval-corrupt-image", "data", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_corrupt_image")
    (root / "images" / "val" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return _bad(i, "data", _eval_yolo(c, root / "data.yaml"), ["b.jpg", "cannot be read"])


@case("yolo-eval-coco-json-syntax", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_syntax", _coco_json()[:-20])
    return _bad(i, "data", _eval_yolo(c, path), ["instances_val.json", "not COCO annotations"])


@case("yolo-eval-coco-not-an-object", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_list", "[1, 2, 3]\n")
    return _bad(i, "data", _eval_yolo(c, path), ["instances_val.json", "not COCO annotations"])


@case("yolo-eval-coco-images-missing", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_no_images", _coco_json(file_name="gone.png"))
    return _bad(i, "data", _eval_yolo(c, path), ["gone.png", "instances_val.json", "is in none of"])


@case("yolo-eval-coco-category-count", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_one_category", _coco_json(categories=1))
    _image(path.parent / "a.png")
    return _bad(i, "data", _eval_yolo(c, path), ["1 categories", "the model has 3 classes"])


def _coco_edited(edit) -> str:
    data = json.loads(_coco_json())
    edit(data)
    return json.dumps(data)


@case("yolo-eval-coco-unknown-category", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_unknown_category", _coco_edited(lambda d: d["annotations"][0].update(category_id=9)))
    _image(path.parent / "a.png")
    return _bad(i, "data", _eval_yolo(c, path), ["instances_val.json", "category 9", "not one of its categories"])


@case("yolo-eval-coco-short-bbox", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_short_bbox", _coco_edited(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])))
    return _bad(i, "data", _eval_yolo(c, path), ["instances_val.json", "not COCO annotations", "not enough values"])


@case("yolo-eval-coco-image-without-file-name", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_no_file_name", _coco_edited(lambda d: d["images"][0].pop("file_name")))
    return _bad(i, "data", _eval_yolo(c, path), ["instances_val.json", "not COCO annotations", "no 'file_name'"])


@case("yolo-eval-coco-no-images", "data", needs=YOLO)
def _(c, i):
    path = _coco(c, "det_coco_zero_images", _coco_edited(lambda d: d.update(images=[])))
    return _bad(i, "data", _eval_yolo(c, path), ["instances_val.json", "lists no images"])


@case("yolo-eval-not-detection-data", "data", needs=YOLO)
def _(c, i):
    path = c.path("det_boxes.csv")
    path.write_text("image,x,y,w,h\na.png,1,2,3,4\n")
    return _bad(i, "data", _eval_yolo(c, path), ["det_boxes.csv", "must be an Ultralytics data.yaml"])


@case("yolo-conf-above-1", "cli", needs=YOLO)
def _(c, i):
    return _bad(i, "cli", ("onnx", _yolo(c), "--conf", "1.5", "-o", c.out(f"{i}.onnx")), ["--conf", "less than 1"])


@case("yolo-verify-iou-0", "cli", needs=YOLO)
def _(c, i):
    return _bad(i, "cli", ("verify", c.good_onnx, "--checkpoint", _yolo(c), "--iou", "0"), ["--iou", "greater than 0"])


@case("yolo-output-inside-the-val-images", "output", needs=YOLO)
def _(c, i):
    root = _detect_data(c, "det_images_out")
    images = root / "images" / "val"
    return _bad(i, "output", ("onnx", _yolo(c), "--images", images, "-o", images / "best.onnx"), ["inside the --images data"])


@case("recipe-detect-conf-above-1", "recipe")
def _(c, i):
    recipe = _recipe(c, i, "model: {arch: simple_cnn}\nverify:\n  detect: {conf: 1.5}\n")
    return _bad(i, "recipe", _run_args(c, recipe, i), ["verify.detect.conf", "less than 1"])


@case("recipe-detect-unknown-key", "recipe")
def _(c, i):
    recipe = _recipe(c, i, "model: {arch: simple_cnn}\nverify:\n  detect: {confidence: 0.3}\n")
    return _bad(i, "recipe", _run_args(c, recipe, i), ["verify.detect.confidence", "unknown key"])


# --------------------------------------------------------------------------- building and judging


def not_importable(package: str) -> str:
    """'' where ``package`` imports, else why the cases written with it are skipped."""
    try:
        importlib.import_module(package)
    except ImportError as exc:
        return f"{package} is not importable ({exc}); scripts/setup.sh installs it"
    return ""


def make_corpus(root: Path) -> list[Case]:
    """Write every broken input under ``root`` and return the cases (ids are unique); a case whose package
    is not importable comes back unbuilt, with ``skip`` saying why."""
    from exporter.sources.ultralytics import restore_pil_open

    corpus = Corpus(root)
    why = {package: not_importable(package) for package in sorted(set(NEEDS.values()))}
    cases = []
    try:
        for case_id, kind, build in BUILDERS:
            needs = NEEDS.get(case_id, "")
            if needs and why[needs]:
                cases.append(Case(case_id, kind, (), 0, (), needs=needs, skip=why[needs]))
            else:
                cases.append(replace(build(corpus, case_id), needs=needs))
    finally:
        restore_pil_open()  # importing Ultralytics patched PIL's Image.open for the whole process
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


def case_ids() -> list[str]:
    return [case_id for case_id, _, _ in BUILDERS]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its size and modification time (a file appearing, vanishing or changing shows)."""
    out = {}
    for path in Path(root).rglob("*"):
        st = path.lstat()
        out[str(path.relative_to(root))] = (path.is_dir(), st.st_size if not path.is_dir() else 0, st.st_mtime_ns)
    return out


def invoke_in_process(args: tuple[str, ...]) -> Outcome:
    from typer.testing import CliRunner

    from exporter.cli import app

    result = CliRunner().invoke(app, list(args))
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.stdout, result.stderr, exc)


def run_case(case_: Case, root: Path, invoke: Callable[[tuple[str, ...]], Outcome] = invoke_in_process) -> Verdict:
    before = snapshot(root)
    outcome = invoke(case_.args)
    return judge(case_, outcome, before, snapshot(root))


def judge(case_: Case, outcome: Outcome, before: dict, after: dict) -> Verdict:
    v = Verdict(case_, outcome)
    text = outcome.stdout + outcome.stderr
    if outcome.exception is not None:
        v.traceback = True
        v.problems.append(f"an exception escaped: {type(outcome.exception).__name__}: {outcome.exception}")
    if "Traceback" in text:
        v.traceback = True
        v.problems.append("a traceback was printed")
    if outcome.exit_code != case_.exit_code:
        v.problems.append(f"exit code {outcome.exit_code}, expected {case_.exit_code}")
    if case_.usage:
        message = outcome.stderr
        if "Usage:" not in message:
            v.problems.append("no usage message")
    else:
        lines = outcome.stderr.splitlines()
        errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        if len(errors) != 1:
            v.problems.append(f"{len(errors)} `error:` lines, expected exactly one")
        # the error line, and the problems it lists below it ("  - where: what"), one per line
        listed = [] if not errors else [line for line in lines[errors[-1] + 1 :] if line.startswith("  - ")]
        message = "\n".join([lines[errors[-1]], *listed]) if errors else ""
    missing = [w for w in case_.words if w.lower() not in message.lower()]
    if missing:
        v.problems.append(f"the error does not say {missing}: {message[:300]!r}")
    changed = sorted(
        set(before) ^ set(after) | {k for k in set(before) & set(after) if before[k] != after[k] and not before[k][0]}
    )
    if changed:
        v.partial_files = changed
        v.problems.append(f"files written or changed: {changed[:5]}")
    v.harmed_inputs = [k for k in before if k.startswith("in") and not before[k][0] and before[k] != after.get(k)]
    if v.harmed_inputs:
        v.problems.append(f"inputs changed or gone: {v.harmed_inputs[:5]}")
    ran = [m for m in case_.markers if Path(m).exists()]
    if ran:
        v.payload_ran = True
        v.problems.append(f"the hostile payload ran (created {ran})")
    return v


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path("cnnexport-corpus")
    cases = make_corpus(root)
    for c in cases:
        print(f"{c.id:<40} " + (f"skipped: {c.skip}" if c.skip else f"exit {c.exit_code}  {c.command()}"))
    print(f"{len(cases)} cases under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
