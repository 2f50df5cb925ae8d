"""The docs cannot go stale: every `$ cnnexport ...` line of README.md and docs/ runs here.

The convention (docs/index.md, "How to read the examples"): inside a fenced code block, a line
`$ cnnexport ARGS` is a command, and the lines after it, up to the next `$ ` line or the end of
the block, are what it prints. A trailing `# exit N` is its exit code (default 0);
`# exit N without MODULE` is its exit code on a machine where MODULE does not import (there,
the command runs and must exit N; where MODULE imports, it is skipped, saying why). Any other
trailing `# ...` is a remark. Shown output is checked line by line: each shown line, with the
table borders dropped, its whitespace collapsed and every number written `#`, must appear in
what the command printed (stdout and stderr); `…` stands for what a line leaves out (the parts
around it must appear in that order), so a line that is only `…` checks nothing.

The commands run in process (Typer's CliRunner on exporter.cli:app, so torch is imported
once), in one session workspace: the README first, then the pages in mkdocs.yml's nav order,
each page's commands in order, so a command may read what an earlier one on its page wrote.
The workspace holds the small files the examples name (build_workspace; docs/index.md lists
them), and every python block of the docs with `title="NAME"` is written into it as NAME (the
user model files the pages show are the ones the commands load); an untitled python block runs
there too, in its place in that order (its asserts are its checks). A `# slow` example runs with
CNNEXPORT_FULL=1, like the suite's other slow tests.

CNNEXPORT_DOCS_DUMP=FOLDER writes each command's full output there (page, line, argv, exit
code, seconds): what to paste into a page after a change.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
BENCHMARKS = DOCS / "benchmarks"  # a symlink to ../benchmarks: the tables are linked, never copied
README_MAX_LINES = 250

# --------------------------------------------------------------------------- reading the pages


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    info: str  # what follows the fence: language and attributes
    lines: list[str]


@dataclass
class Example:
    page: str
    line: int
    text: str  # the command line as written, without "$ " (or a python block's source)
    argv: list[str]
    exit_code: int = 0
    unless: str | None = None  # `# exit N without MODULE`: N only where MODULE is missing
    slow: bool = False  # `# slow`: runs with CNNEXPORT_FULL=1, as the suite's slow tests do
    shown: list[str] = field(default_factory=list)
    python: bool = False  # an untitled python block of the docs: executed in the workspace

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


def code_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a markdown page, its lines dedented by the fence's indentation."""
    page = page_name(path)
    blocks, current, indent, fence = [], None, "", ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(raw)
        if current is None:
            if match:
                indent, fence = match.group(1), match.group(2)
                current = Block(page, number, match.group(3).strip(), [])
            continue
        if match and match.group(2).startswith(fence[0] * len(fence)) and not match.group(3).strip():
            blocks.append(current)
            current = None
            continue
        current.lines.append(raw[len(indent) :] if raw.startswith(indent) else raw.lstrip())
    return blocks


def page_name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def split_comment(line: str) -> tuple[str, str]:
    """'cnnexport x --a "b # c"  # exit 1' -> ('cnnexport x --a "b # c"', 'exit 1'): the first # outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


EXIT_NOTE = re.compile(r"\bexit (\d+)(?: without ([A-Za-z_][\w.]*))?\b")


def examples_of(path: Path) -> list[Example]:
    """The page's `$ cnnexport` lines with what they show, and its untitled python blocks, in page order."""
    found = []
    for block in code_blocks(path):
        if block.info.split()[:1] == ["python"]:
            if "title=" not in block.info:
                found.append(Example(block.page, block.line, "\n".join(block.lines), [], python=True))
            continue
        current = None
        for offset, line in enumerate(block.lines, 1):
            if line.startswith("$ "):
                command, note = split_comment(line[2:])
                current = None
                if not command.startswith("cnnexport"):
                    continue  # test_example_commands_follow_the_convention says so
                current = Example(block.page, block.line + offset, command, shlex.split(command)[1:])
                match = EXIT_NOTE.search(note)
                if match:
                    current.exit_code, current.unless = int(match.group(1)), match.group(2)
                current.slow = bool(re.search(r"\bslow\b", note))
                found.append(current)
            elif current is not None:
                current.shown.append(line)
    return found


def nav_pages() -> list[str]:
    """The pages of mkdocs.yml's nav, in order (paths relative to docs/)."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages: list[str] = []

    def walk(node):
        if isinstance(node, str):
            pages.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    return [p for p in pages if not re.match(r"^[a-z]+://", p)]


def doc_files() -> list[Path]:
    """README.md, then every docs page in nav order (the benchmark tables, which hold no commands, left out)."""
    pages = [DOCS / p for p in nav_pages() if not p.startswith("benchmarks/")]
    rest = sorted(p for p in DOCS.rglob("*.md") if p not in pages and BENCHMARKS not in p.parents)
    return [README, *pages, *rest]


EXAMPLES = [example for path in doc_files() for example in examples_of(path)]

# --------------------------------------------------------------------------- comparing output

BOX = re.compile(r"[\u2500-\u257f]")
NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")


def normalized(text: str) -> str:
    """Table borders dropped, every number '#', whitespace collapsed (rich pads and wraps at its width)."""
    return " ".join(NUMBER.sub("#", BOX.sub(" ", text)).split())


def missing_lines(shown: list[str], printed: str) -> list[str]:
    """The shown lines the output lacks. `…` stands for what a line leaves out: its parts must appear in order."""
    haystack = f" {normalized(printed)} "
    missing = []
    for line in shown:
        parts = [normalized(part) for part in line.split("…")]
        if len(parts) == 1:
            if parts[0] and f" {parts[0]} " not in haystack:  # whole words: "pass" must not match "passed"
                missing.append(line)
            continue
        at = 0
        for part in filter(None, parts):
            at = haystack.find(part, at)
            if at < 0:
                missing.append(line)
                break
            at += len(part)
    return missing


# --------------------------------------------------------------------------- the workspace


def _registry():
    try:
        from exporter import architectures  # where the registry moves (issue 25)
    except ImportError:
        import architectures
    return architectures


def titled_blocks(python: bool) -> list[tuple[Block, str]]:
    return [
        (block, match.group(1))
        for path in doc_files()
        for block in code_blocks(path)
        if (match := re.search(r'title="([^"]+)"', block.info)) and (block.info.split()[0] == "python") == python
    ]


def titled_files() -> dict[str, str]:
    """Every ```python title="NAME"``` block of the docs: the files the examples' commands load."""
    files = {}
    for block, name in titled_blocks(python=True):
        assert name not in files, f"{block.page}:{block.line}: a second block titled {name}"
        files[name] = "\n".join(block.lines) + "\n"
    return files


def _photo_crops(count: int, size: int, seed: int = 0):
    """RGB crops of scikit-learn's two sample photos (the only colour images that ship in a package)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % 2]
        side = int(rng.integers(64, 200))
        y, x = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
        crops.append(Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR))
    return crops


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _lightning_checkpoint(path: Path, registry) -> None:
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Classifier(pl.LightningModule):
        def __init__(self, arch: str = "simple_cnn", num_classes: int = 10, lr: float = 0.01):
            super().__init__()
            self.save_hyperparameters()
            self.model = registry.get(arch).build(num_classes=num_classes)
            self.criterion = torch.nn.CrossEntropyLoss(weight=torch.ones(num_classes))  # a buffer beside the network

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, _):
            x, y = batch
            return self.criterion(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    module = Classifier()
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(path.parent / ".lightning"),
    )
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))), batch_size=4))
    trainer.save_checkpoint(str(path))
    shutil.rmtree(path.parent / ".lightning", ignore_errors=True)


def _release_keys(ws: Path) -> None:
    """release.pem / release.pub.pem: the EC P-256 key pair of docs/release.md and docs/cli/sign.md."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    plain = serialization.NoEncryption()
    (ws / "release.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, plain))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (ws / "release.pub.pem").write_bytes(public)


def build_workspace(ws: Path) -> None:
    """The files the examples name (docs/index.md, "The example files"), small so that every command runs in seconds."""
    import argparse

    import numpy as np
    import torch

    from exporter.demo import train
    from exporter.inputs import digits_arrays
    from tests.conftest import build_model, calibrate_batchnorm  # how the suite makes its small models

    registry = _registry()
    for name, text in titled_files().items():
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "recipes", ws / "recipes", ignore=shutil.ignore_patterns("*.py", "__pycache__"))

    # simple_cnn.pt: the small RGB classifier (3x32x32, 10 classes), random weights, a plain state_dict
    simple = build_model("simple_cnn")
    torch.save(simple.state_dict(), ws / "simple_cnn.pt")
    shutil.copy(ws / "simple_cnn.pt", ws / "simple_cnn_copy.pt")
    (ws / "empty").mkdir()
    torch.save(simple, ws / "whole_model.pt")  # a whole pickled nn.Module: refused without --trust-pickle
    (ws / "labels.txt").write_text(
        "".join(f"{c}\n" for c in ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
    )
    (ws / "digits.txt").write_text("".join(f"{d}\n" for d in range(10)))
    _release_keys(ws)

    # images/: 128 photo crops at 32x32 (calibration data); labelled/: the same as an ImageFolder; calib.npy normalized
    spec = registry.get("simple_cnn").spec(10)
    crops = _photo_crops(128, 32)
    (ws / "images").mkdir()
    for i, crop in enumerate(crops):
        crop.save(ws / "images" / f"crop{i:03d}.png")
        label = ws / "labelled" / f"class{i % 10}"
        label.mkdir(parents=True, exist_ok=True)
        crop.save(label / f"crop{i:03d}.png")
    pixels = np.stack([np.asarray(c, dtype=np.float32) / 255.0 for c in crops]).transpose(0, 3, 1, 2)
    mean, std = np.array(spec.mean, np.float32)[:, None, None], np.array(spec.std, np.float32)[:, None, None]
    np.save(ws / "calib.npy", ((pixels - mean) / std).astype(np.float32))

    # samples/: 16 digits as 32x32 greyscale PNGs (real inputs for LeNet-5)
    from PIL import Image
    from sklearn.datasets import load_digits

    (ws / "samples").mkdir()
    for i, image in enumerate(load_digits().images[:16]):
        Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR).save(
            ws / "samples" / f"{i}.png"
        )

    # tampered.onnx: simple_cnn's ONNX with one weight of its first convolution moved by 0.5
    import onnx
    from onnx import numpy_helper

    from exporter import export_artifact, load_checkpoint

    scratch = ws / ".scratch"
    made = export_artifact("onnx", load_checkpoint(ws / "simple_cnn.pt"), scratch / "simple_cnn.onnx")
    assert made.verification.status == "pass", made.verification.reason
    graph = onnx.load(str(scratch / "simple_cnn.onnx"))
    first_conv = next(n for n in graph.graph.node if n.op_type == "Conv")
    for init in graph.graph.initializer:
        if init.name == first_conv.input[1]:
            weight = numpy_helper.to_array(init).copy()
            weight.flat[0] += 0.5
            init.CopyFrom(numpy_helper.from_array(weight, init.name))
    onnx.save(graph, str(ws / "tampered.onnx"))
    shutil.rmtree(scratch)

    # checkpoint.pth: what torchvision's references/classification/train.py --model-ema saves
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    tv = calibrate_batchnorm(registry.get("mobilenet_v3_small").build(num_classes=10), SimpleNamespace(input_shape=(3, 64, 64)))
    optimizer = torch.optim.SGD(tv.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    ema = AveragedModel(tv, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    ema.update_parameters(tv)
    args = argparse.Namespace(
        model="mobilenet_v3_small",
        model_ema=True,
        val_resize_size=73,
        val_crop_size=64,
        train_crop_size=64,
        interpolation="bilinear",
        epochs=3,
        lr=0.1,
    )
    torch.save(
        {
            "model": tv.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": 3,
            "args": args,
            "model_ema": ema.state_dict(),
        },
        ws / "checkpoint.pth",
    )

    # lit.ckpt: a real Lightning checkpoint, simple_cnn as self.model beside a weighted loss
    _lightning_checkpoint(ws / "lit.ckpt", registry)

    # mynet.pth: the user class of docs/cli/onnx.md (mymodels.py:MyNet), 7 classes
    torch.manual_seed(0)
    mynet = _import_file(ws / "mymodels.py", "MyNet")(num_classes=7)
    torch.save(calibrate_batchnorm(mynet, spec).state_dict(), ws / "mynet.pth")

    # outlier.pt: sixlayer.py's net trained on the digits (2 epochs), one BatchNorm channel x400 and the next conv /400
    lenet_spec = registry.get("lenet5").spec(10)
    train_x, train_y, _, _ = digits_arrays(lenet_spec)
    torch.manual_seed(0)
    six, _ = train(_import_file(ws / "sixlayer.py", "SixLayerCNN")(), train_x, train_y, epochs=2)
    with torch.no_grad():
        bn, reader = six.features[5], six.features[8]
        bn.weight[3] *= 400
        bn.bias[3] *= 400
        reader.weight[:, 3] /= 400
    torch.save(six.state_dict(), ws / "outlier.pt")

    # seg.pt + seg_val/: the two-head segmentation net of docs/verification.md, and images/ + masks/ to evaluate it on
    torch.manual_seed(0)
    seg = _import_file(ws / "twohead.py", "TwoHeadSeg")()
    calibrate_batchnorm(seg, SimpleNamespace(input_shape=(3, 64, 64)))
    torch.save(seg.state_dict(), ws / "seg.pt")
    for sub in ("images", "masks"):
        (ws / "seg_val" / sub).mkdir(parents=True)
    for i, crop in enumerate(_photo_crops(8, 64, seed=1)):
        crop.save(ws / "seg_val" / "images" / f"{i}.png")
        mask = (np.asarray(crop.convert("L")) // 86).astype(np.uint8)  # three classes by brightness
        Image.fromarray(mask).save(ws / "seg_val" / "masks" / f"{i}.png")

    # ssd_head.pt: SSDlite's head without post-processing (ssd_head.py), 3 classes; only its slow example reads it
    if not os.environ.get("CNNEXPORT_FULL"):
        return
    torch.manual_seed(0)
    head = _import_file(ws / "ssd_head.py", "SSDLiteHead")(num_classes=3)
    calibrate_batchnorm(head, SimpleNamespace(input_shape=(3, 160, 160)), steps=2)
    torch.save(head.state_dict(), ws / "ssd_head.pt")


# --------------------------------------------------------------------------- running the commands


@dataclass
class Ran:
    exit_code: int
    output: str
    seconds: float


def invoke(argv: list[str], cwd: Path) -> Ran:
    from typer.testing import CliRunner

    from exporter.cli import app

    started = time.perf_counter()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        os.chdir(before)
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        output += "".join(traceback.format_exception(result.exception))
    return Ran(result.exit_code, output, time.perf_counter() - started)


def run_python(source: str, cwd: Path) -> Ran:
    """A python block of the docs, executed in the workspace (its asserts are its checks)."""
    import contextlib
    import io
    import traceback

    started = time.perf_counter()
    before, out = os.getcwd(), io.StringIO()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, "<docs python block>", "exec"), {"__name__": "__docs__"})
        code = 0
    except Exception:  # noqa: BLE001 - reported by the test, with the traceback
        out.write(traceback.format_exc())
        code = 1
    finally:
        os.chdir(before)
    return Ran(code, out.getvalue(), time.perf_counter() - started)


class Session:
    """Runs the examples in order, each once, up to the one a test asks for."""

    def __init__(self, ws: Path, dump: Path | None):
        self.ws, self.dump = ws, dump
        self.done: list[Ran | None] = []
        self.by_argv: dict[tuple[str, ...], Ran] = {}

    def result(self, index: int) -> Ran | None:
        """Runs the examples before ``index`` first (a page's commands build on each other); slow ones only if asked for."""
        while len(self.done) <= index:
            example = EXAMPLES[len(self.done)]
            wanted = len(self.done) == index or not example.slow or os.environ.get("CNNEXPORT_FULL")
            self.done.append(self._run(example) if wanted else None)
        return self.done[index]

    def run_all(self) -> None:
        """Every example (the slow ones with CNNEXPORT_FULL=1), in order."""
        while len(self.done) < len(EXAMPLES):
            example = EXAMPLES[len(self.done)]
            self.done.append(self._run(example) if not example.slow or os.environ.get("CNNEXPORT_FULL") else None)

    def _run(self, example: Example) -> Ran | None:
        """None where the page documents the command for a machine without a module this one has."""
        if example.unless and importlib.util.find_spec(example.unless) is not None:
            return None
        if example.python:
            return run_python(example.text, self.ws)
        key = tuple(example.argv)
        if key in self.by_argv:  # shown twice with the same arguments (the README and its page): run once
            return self.by_argv[key]
        ran = self.by_argv[key] = invoke(example.argv, self.ws)
        if self.dump is not None:
            self.dump.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^\w.]+", "_", example.id)
            (self.dump / f"{name}.txt").write_text(
                f"$ {example.text}\n# exit {ran.exit_code}, {ran.seconds:.1f}s\n{ran.output}", encoding="utf-8"
            )
        return ran


@pytest.fixture(scope="session")
def docs_session(tmp_path_factory):
    ws = tmp_path_factory.mktemp("docs-workspace")
    started = time.perf_counter()
    build_workspace(ws)
    dump = os.environ.get("CNNEXPORT_DOCS_DUMP")
    session = Session(ws, Path(dump) if dump else None)
    if session.dump is not None:
        session.dump.mkdir(parents=True, exist_ok=True)
        (session.dump / "_workspace.txt").write_text(f"{time.perf_counter() - started:.1f}s\n")
    return session


@pytest.mark.parametrize(
    "index", [pytest.param(i, marks=[pytest.mark.full] if e.slow else [], id=e.id) for i, e in enumerate(EXAMPLES)]
)
def test_example(docs_session, index):
    example = EXAMPLES[index]
    ran = docs_session.result(index)
    if example.python:
        assert ran.exit_code == 0, f"{example.id}: the python block failed:\n{ran.output[-4000:]}"
        return
    if ran is None:
        pytest.skip(f"{example.unless} is installed here; the page documents this command without it")
    assert ran.exit_code == example.exit_code, (
        f"{example.id}: `{example.text}` exited {ran.exit_code}, the page says {example.exit_code}\n{ran.output[-3000:]}"
    )
    missing = missing_lines(example.shown, ran.output)
    assert not missing, (
        f"{example.id}: `{example.text}` did not print these shown lines (numbers aside):\n"
        + "\n".join(missing)
        + f"\n--- it printed:\n{ran.output[-4000:]}"
    )


def test_the_readme_demo_delivers_what_the_demo_promises(docs_session):
    """The README's `cnnexport demo` (every page after it reads its folder) is held to tests/test_demo.py's checks."""
    import json

    from tests.test_demo import check_demo_report

    index = next(i for i, e in enumerate(EXAMPLES) if e.page == "README.md" and e.argv == ["demo"])
    assert docs_session.result(index).exit_code == 0
    out = docs_session.ws / "cnnexport-demo"
    check_demo_report(json.loads((out / "demo-report.json").read_text()), out)


def test_file_excerpts_match_what_the_commands_wrote(docs_session):
    """A non-python block titled with a workspace path (```sh title="kit/build.sh"```) is an excerpt of that file."""
    docs_session.run_all()
    for block, name in titled_blocks(python=False):
        written = docs_session.ws / name
        assert written.exists(), f"{block.page}:{block.line}: the examples wrote no {name}"
        lines = written.read_text(encoding="utf-8").splitlines()
        excerpt = [line for line in block.lines if "…" not in line]
        assert any(lines[i : i + len(excerpt)] == excerpt for i in range(len(lines))), (
            f"{block.page}:{block.line}: {name} no longer holds these lines:\n" + "\n".join(excerpt)
        )


# --------------------------------------------------------------------------- the pages themselves


def verbs() -> list[str]:
    import typer

    from exporter.cli import app

    return sorted(typer.main.get_command(app).commands)


def all_flags() -> set[str]:
    import typer

    from exporter.cli import app

    flags = set()
    for command in typer.main.get_command(app).commands.values():
        for param in command.params:
            flags.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return flags


def test_readme_is_a_front_page_under_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines: move detail to docs/"


def test_readme_keeps_the_ci_test_command_byte_for_byte():
    """.ci/run times set-up and tests as two gates; joined with && they are the README's command 2."""
    gates = dict(re.findall(r"^gate (setup|tests) (.+)$", (ROOT / ".ci" / "run").read_text(encoding="utf-8"), re.MULTILINE))
    ci = f"{gates['setup']} && {gates['tests']}"
    assert ci in README.read_text(encoding="utf-8").splitlines(), f"README.md no longer shows CI's command: {ci}"


def test_the_extras_named_are_the_ones_setup_installs():
    setup = re.search(r'-e "\.\[([\w,]+)\]"', (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8"))
    assert setup, "scripts/setup.sh no longer installs the package with extras"
    for path in doc_files():
        for named in re.findall(r"\.\[(test,[\w,]+)\]", path.read_text(encoding="utf-8")):
            assert named == setup.group(1), f"{page_name(path)} says setup installs .[{named}], setup.sh: .[{setup.group(1)}]"


def test_every_verb_has_a_page_and_a_readme_row():
    readme = README.read_text(encoding="utf-8")
    for verb in verbs():
        page = DOCS / "cli" / f"{verb}.md"
        assert page.exists(), f"`cnnexport {verb}` has no page: write {page.relative_to(ROOT)}"
        assert re.search(rf"^\| \[`{verb}`\]\(docs/cli/{verb}\.md\) \|", readme, re.M), f"README's verb table lacks {verb}"
        shown = any(e.page == page_name(page) and e.argv[:1] == [verb] for e in EXAMPLES)
        assert shown, f"{page}: no `$ cnnexport {verb}` example"
    pages = {p.stem for p in (DOCS / "cli").glob("*.md")}
    assert pages <= set(verbs()), f"pages for verbs that do not exist: {sorted(pages - set(verbs()))}"


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs and GitHub-style anchors are made of, near enough)."""
    text = re.sub(r"[^\w\s-]", "", re.sub(r"`", "", heading)).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_readme_links_resolve():
    """mkdocs checks the pages' links (--strict); the README is not a page, so its links are checked here."""
    text = README.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path
        if not file.exists():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"README.md links to what does not exist: {broken}"


def test_nav_lists_every_page_and_only_pages_that_exist():
    nav = nav_pages()
    on_disk = {
        str((Path(folder) / name).relative_to(DOCS))
        for folder, _, names in os.walk(DOCS, followlinks=True)
        for name in names
        if name.endswith(".md")
    }  # mkdocs follows the benchmarks symlink too
    assert not set(nav) - on_disk, f"mkdocs.yml names missing pages: {sorted(set(nav) - on_disk)}"
    assert not on_disk - set(nav), f"pages missing from mkdocs.yml's nav: {sorted(on_disk - set(nav))}"
    assert len(nav) == len(set(nav)), "a page is twice in the nav"


def test_benchmark_tables_are_linked_not_copied():
    assert BENCHMARKS.is_symlink() and BENCHMARKS.resolve() == (ROOT / "benchmarks").resolve()
    rows = set()
    for table in (ROOT / "benchmarks").glob("*.md"):
        rows.update(
            line.strip()
            for line in table.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and re.search(r"\d", line)
        )
    for path in doc_files():
        copied = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() in rows]
        assert not copied, f"{page_name(path)} copies rows of benchmarks/*.md (link the table instead): {copied[:2]}"


def test_example_commands_follow_the_convention():
    """Example commands are `$ cnnexport ...` lines (so they run here): no other `$ ` lines, no bare `cnnexport` commands.

    A line starting with `cnnexport` after a `$ cnnexport` line is output (`cnnexport verification`);
    before the first one, it is a command written some other way.
    """
    wrong = []
    for path in doc_files():
        for block in code_blocks(path):
            # code and file contents; `text`: recorded output of a command shown in a `sh` block (docs/detection.md's
            # YOLO, which the docs workspace does not train), never a command
            if block.info.split()[:1] in (["python"], ["json"], ["yaml"], ["sh"], ["text"]):
                if block.info.split()[:1] == ["text"]:
                    assert not any(line.startswith("$ ") for line in block.lines), (
                        f"{block.page}:{block.line}: a command in a text block"
                    )
                continue
            seen_command = False
            for offset, line in enumerate(block.lines, 1):
                if line.startswith("$ "):
                    seen_command = True
                    if not line.startswith("$ cnnexport"):
                        wrong.append(f"{block.page}:{block.line + offset}: {line}")
                elif line.lstrip().startswith("cnnexport ") and not seen_command:
                    wrong.append(f"{block.page}:{block.line + offset}: {line}")
    assert not wrong, "write example commands as `$ cnnexport ...`:\n" + "\n".join(wrong)


# flags of other programs the pages mention (trtexec's, torchvision train.py's, the benchmark scripts', pytest's, mkdocs')
FOREIGN_FLAGS = {
    "--onnx",
    "--saveEngine",
    "--minShapes",
    "--optShapes",
    "--maxShapes",
    "--fp16",
    "--int8",
    "--stronglyTyped",
    "--timingCacheFile",
    "--skipInference",
    "--model-ema",
    "--val-crop-size",
    "--models",
    "--resume",
    "--report-only",
    "--jsonl",
    "--markdown",
    "--batches",
    "--strict",
    "--durations",
    "--dist",  # pytest-xdist (the README's test command)
    "--timeout",  # pytest-timeout
    "--model",
    "--signature",  # OpenSSF model-signing's CLI (`model_signing verify key`, docs/release.md)
    "--public",  # its --public_key (the regex stops at the underscore)
}


def benchmark_flags() -> set[str]:
    """The options of the benchmarks/ scripts the pages show how to run (zoo.py --source, fleet.py --tiny)."""
    flags = set()
    for script in (ROOT / "benchmarks").glob("*.py"):
        flags |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-zA-Z0-9-]*)\"", script.read_text(encoding="utf-8")))
    return flags


def test_every_documented_flag_exists():
    known = all_flags() | FOREIGN_FLAGS | benchmark_flags() | {"--help"}
    unknown = []
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for flag in re.findall(r"(?<![\w-])--[a-z][a-zA-Z0-9-]*", line):
                if flag not in known:
                    unknown.append(f"{page_name(path)}:{number}: {flag}")
    assert not unknown, "flags no verb has (`cnnexport VERB --help`):\n" + "\n".join(unknown)


# what "Adding a target" (docs/architecture.md) asks you to write: not there until you do
NOT_YET_WRITTEN: set[str] = set()


def test_every_named_file_exists():
    """A path the pages name in backticks (`exporter/rescue/debug.py`, `benchmarks/zoo.py`) is in the repository."""
    named = re.compile(r"`((?:exporter|architectures|recipes|benchmarks|tests|scripts)/[\w./-]*)`")
    gone = []
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in named.findall(line):
                if target not in NOT_YET_WRITTEN and not (ROOT / target).exists():
                    gone.append(f"{page_name(path)}:{number}: {target}")
    assert not gone, "the pages name files that moved or went away:\n" + "\n".join(gone)


def test_exit_code_tables_list_every_code():
    from exporter import errors

    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    for path in (README, DOCS / "index.md"):
        text = path.read_text(encoding="utf-8")
        table = {int(m) for m in re.findall(r"^\| (\d+) \|", text, re.M)}
        assert table == codes, f"{page_name(path)}'s exit codes: {sorted(table)}; exporter/errors.py: {sorted(codes)}"


def test_mkdocs_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the dev extra: pip install -e '.[dev]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (the dev extra: pip install -e '.[dev]')")
    import subprocess
    import sys

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
