"""Shared fixtures: small real models saved as real checkpoint files, and a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FULL = "CNNEXPORT_FULL"  # the full tier: set to 1 to run the tests marked `full` as well


def pytest_collection_modifyitems(config, items):
    """The required tier (the README's command) leaves out the tests marked `full`; CNNEXPORT_FULL=1 runs them too.

    They are deselected rather than skipped, so the summary says how many ("N deselected") without a
    line per test; docs/robustness.md lists each full-tier test's required partner.
    """
    import os

    if os.environ.get(FULL):
        return
    kept = [item for item in items if "full" not in item.keywords]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if "full" in item.keywords])
        items[:] = kept


def pytest_configure(config):
    """Under pytest-xdist each worker computes with one thread, so the two workers do not fight over 2 cores."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("CNNEXPORT_THREADS", "1")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)


FAKE_VERDICT = "CNNEXPORT_TEST_FAKE_VERDICT"  # tests/test_meta_verdicts.py: "skipped" or "pass" for every artifact


@pytest.fixture(autouse=True, scope="session")
def _fake_verdict():
    """With CNNEXPORT_TEST_FAKE_VERDICT set, the verifier says skipped (or pass) without comparing anything.

    Only tests/test_meta_verdicts.py sets it, in a child pytest: a suite that still passes under
    such a verifier has tests that cannot tell a verified artifact from an unverified one.
    """
    import os

    mode = os.environ.get(FAKE_VERDICT)
    if not mode:
        yield
        return
    from exporter import pipeline
    from exporter.verify import Verdict

    def fake_verify(artifact, references, input_sets, tolerance, precision="fp32", spec=None, **_):
        if mode == "skipped":
            return Verdict.skipped("faked by the meta-test", precision)
        return Verdict("pass", "", precision, tolerance, [])

    saved = pipeline.verify, pipeline.finish
    pipeline.verify, pipeline.finish = fake_verify, lambda verdict, extra: verdict
    yield
    pipeline.verify, pipeline.finish = saved


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the caches of the test run (registry signatures, key fingerprints) out of the user's ~/.cache.

    The isolated environments are the exception: the run uses the ones scripts/setup.sh made (a
    private one would reinstall litert-torch from PyPI in every test session, ~2 min on 2 cores).
    Tests about creating an environment point CNNEXPORT_CACHE at their own folder.
    """
    import os

    from exporter.isolated import cache_root

    shared_envs = cache_root() / "envs"
    shared_envs.mkdir(parents=True, exist_ok=True)
    private = tmp_path_factory.mktemp("cache")
    (private / "envs").symlink_to(shared_envs, target_is_directory=True)
    os.environ["CNNEXPORT_CACHE"] = str(private)


def calibrate_batchnorm(model, spec, steps: int = 3, seed: int = 0):
    """A few train-mode passes so BatchNorm statistics are realistic (random-init outputs are ~0 otherwise)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand((8, *spec.input_shape), generator=generator) * 2 - 1)
    return model.eval()


def build_model(name: str, num_classes: int | None = None, seed: int = 0):
    """A registry model with seeded random weights and calibrated BatchNorm."""
    import torch

    from exporter import architectures

    entry = architectures.get(name)
    torch.manual_seed(seed)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = entry.build(**kwargs)
    return calibrate_batchnorm(model, entry.spec(num_classes))


def ctrl_c_as_usual() -> None:
    """Popen's preexec_fn for a child the test interrupts: SIGINT raises KeyboardInterrupt there, as in a terminal.

    A process started with SIGINT ignored keeps ignoring it (Python installs its handler only where
    SIGINT is not ignored), and an ignored disposition is inherited: a test worker in that state
    would make every SIGINT the test sends a no-op (seen under pytest-xdist in the full tier).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_root(tmp_path_factory) -> Path:
    """The folder every worker of this test run shares (pytest-xdist gives each worker a basetemp under it)."""
    import os

    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# The digits nets the suite trains, once per test run for every file and worker: name -> (builder, epochs, how saved)
DIGITS_NETS = {
    "lenet5": ("lenet5", 6, "training dict"),  # {"arch": "lenet5", "model_state_dict": ...}: names its architecture
    "resnet": ("tests.small_models:SmallResNet", 4, "state_dict"),  # a bare state_dict: needs --arch
    "hardswish": ("tests.small_models:HardswishCNN", 6, "state_dict"),
}


def trained_digits_net(tmp_path_factory, name: str) -> Path:
    """A digits net from DIGITS_NETS, trained (seeded) by the first test that asks; the others read its file.

    Tests copy it before writing next to it. A lock makes a second worker wait for the first one's training.
    """
    import fcntl

    import torch

    from exporter import architectures
    from exporter.demo import train
    from exporter.inputs import digits_arrays
    from tests import small_models

    builder, epochs, form = DIGITS_NETS[name]
    folder = run_root(tmp_path_factory) / "trained-digits"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.pt"
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            train_x, train_y, _, _ = digits_arrays(architectures.get("lenet5").spec(10))
            torch.manual_seed(0)
            if builder.startswith("tests."):
                model = getattr(small_models, builder.rsplit(":", 1)[1])()
            else:
                model = architectures.get(builder).build(num_classes=10)
            model, _ = train(model, train_x, train_y, epochs=epochs)
            state = model.state_dict()
            partial = folder / f"{name}.pt.partial"
            torch.save({"arch": builder, "model_state_dict": state} if form == "training dict" else state, partial)
            partial.rename(path)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def simple_cnn_ckpt(models_dir) -> Path:
    """simple_cnn, 10 classes, saved as a plain state_dict."""
    import torch

    path = models_dir / "simple_cnn.pt"
    torch.save(build_model("simple_cnn").state_dict(), path)
    return path


@pytest.fixture(scope="session")
def lenet5_ckpt(models_dir) -> Path:
    """LeNet-5 with 7 classes, saved as a training dict (model_state_dict + optimizer + epoch)."""
    import torch

    model = build_model("lenet5", num_classes=7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = models_dir / "lenet5.pth"
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(), "epoch": 5}, path)
    return path


@pytest.fixture(scope="session")
def exported_onnx(models_dir, simple_cnn_ckpt) -> Path:
    """simple_cnn exported (and verified) once, for tests that need an existing ONNX file."""
    from exporter import export_artifact, load_checkpoint

    out = models_dir / "exported" / "simple_cnn.onnx"
    result = export_artifact("onnx", load_checkpoint(simple_cnn_ckpt, arch="simple_cnn"), out)
    assert result.verification.status == "pass", result.verification.reason
    return out


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"<exit {self.exit_code}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}>"


def run_cli(*args) -> CliResult:
    """`cnnexport ARGS...` in process through Typer's CliRunner (also for module-scoped fixtures)."""
    from typer.testing import CliRunner

    from exporter.cli import app

    return CliResult(CliRunner().invoke(app, [str(a) for a in args]))


@pytest.fixture
def cli():
    """Run `cnnexport ARGS...` in process through Typer's CliRunner."""
    return run_cli


def files_in(folder: Path) -> set[str]:
    """Every file name under a folder (to prove nothing partial was left behind)."""
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*")}


def user_model_class(folder: Path, source: str, module: str, name: str):
    """Write ``source`` to folder/module.py and return its class ``name`` (what --arch module.py:name loads)."""
    import importlib.util

    path = Path(folder) / f"{module}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"_test_user_{module}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, name)


def plugin_site(site: Path, module: str, source: str, entry_points: str) -> dict:
    """An environment whose PYTHONPATH holds ``module`` (written from ``source``) and a dist-info declaring
    ``entry_points`` (entry_points.txt text): what `pip install` of a plug-in leaves, without installing one."""
    import os

    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parents[1])])}
