"""exporter/isolated.py: a venv layered on ours, whose pins shadow ours without touching them (needs PyPI)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import isolated
from exporter.errors import BackendUnavailable, ExportError
from exporter.isolated import MARKER, IsolatedEnv

ROOT = Path(__file__).resolve().parents[1]
PIN = ("typing_extensions==4.12.2",)  # a tiny pure-Python wheel, older than ours (4.16)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One env for the module, created by two `python -m exporter.isolated create` at once."""
    cache = tmp_path_factory.mktemp("isolated-cache")
    env = {**isolated.child_env(), "CNNEXPORT_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "exporter.isolated", "create", "te", *PIN]
    pipe = subprocess.PIPE
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=pipe, stderr=pipe) for _ in range(2)]
    results = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNEXPORT_CACHE", str(cache))
        yield IsolatedEnv("te", PIN), results


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNEXPORT_CACHE", str(tmp_path))
    return tmp_path


def test_concurrent_create_builds_once(shared):
    env, results = shared
    assert [rc for _, _, rc in results] == [0, 0], results
    assert {out.strip() for out, _, _ in results} == {str(env.path)}
    assert sum("creating the isolated environment" in err for _, err, _ in results) == 1, results
    assert env.ready() and not (env.path / f"{MARKER}.tmp").exists()


def test_env_shadows_our_pin_and_shares_our_torch(shared, monkeypatch, tmp_path):
    env, _ = shared
    code = "import typing_extensions, importlib.metadata as m, torch; print(m.version('typing_extensions'), torch.__version__)"
    done = env.run(["-c", code], timeout=120)
    assert done.returncode == 0, done.stderr
    te, torch_version = done.stdout.split()
    assert te == "4.12.2"
    assert torch_version.split("+")[0] == importlib.metadata.version("torch")  # 2.14.1+cu130: ours, not a download
    assert "torch" not in {p.name.split("-")[0] for p in env.path.glob("lib/python*/site-packages/*")}
    assert importlib.metadata.version("typing_extensions") == "4.16.0"  # ours is untouched
    assert env.marker()["versions"] == {"typing_extensions": "4.12.2"}
    assert env.describe() == {
        "isolated_env": str(env.path),
        "requirements": list(PIN),
        "versions": {"typing_extensions": "4.12.2"},
    }
    # neither PYTHONPATH nor our editable install (a .pth of ours) leaks in; ensurepip's setuptools 65 does not shadow ours
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    probe = "import importlib.util as u, importlib.metadata as m; print(u.find_spec('exporter') is None, m.version('setuptools'))"
    done = env.run(["-c", probe], cwd=tmp_path)  # `-c` puts the working folder on sys.path: not the repo root here
    assert done.stdout.split() == ["True", importlib.metadata.version("setuptools")], done.stderr

    mtime = (env.path / MARKER).stat().st_mtime_ns

    def no_subprocess(*a, **k):
        raise AssertionError("ensure() of a ready env ran a subprocess")

    monkeypatch.setattr(isolated, "call", no_subprocess)
    assert env.ensure() is env
    assert (env.path / MARKER).stat().st_mtime_ns == mtime


def test_failing_requirement_leaves_nothing(cache):
    req = "cnnexport-no-such-package-xyz==1.0"
    env = IsolatedEnv("bad", (req,))
    with pytest.raises(BackendUnavailable, match="cnnexport-no-such-package-xyz") as info:
        env.ensure()
    assert "WARNING: Location" not in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not env.path.exists()


def test_leftover_folder_without_marker_is_rebuilt(cache):
    env = IsolatedEnv("bare", ())  # no requirements: venv only, no download
    env.path.mkdir(parents=True)
    (env.path / "junk").write_text("half a build")
    said: list[str] = []
    env.ensure(said.append)
    assert env.ready() and not (env.path / "junk").exists()
    assert any("creating the isolated environment for bare" in s for s in said)
    assert json.loads((env.path / MARKER).read_text())["versions"] == {}


def test_run_script(shared, tmp_path):
    env, _ = shared
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('first', file=sys.stderr)\nprint('the real reason', file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(ExportError, match="the real reason") as info:
        env.run_script(bad)
    assert info.value.exit_code == 2 and "first" in info.value.stderr
    good = tmp_path / "good.py"
    good.write_text("import sys\nprint('args', *sys.argv[1:])\n")
    assert env.run_script(good, "a", "b").stdout == "args a b\n"
    slow = tmp_path / "slow.py"
    slow.write_text("import sys, time\nprint('converting', file=sys.stderr, flush=True)\ntime.sleep(60)\n")
    with pytest.raises(ExportError, match=r"ran past 1 s .*: converting"):
        env.run_script(slow, timeout=1)


def test_interrupt_kills_the_child(shared, monkeypatch):
    env, _ = shared
    started: list[subprocess.Popen] = []

    class Interrupted(subprocess.Popen):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            started.append(self)

        def communicate(self, *a, **k):
            raise KeyboardInterrupt

    monkeypatch.setattr(isolated.subprocess, "Popen", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        env.run(["-c", "import time; time.sleep(60)"])
    assert started and started[0].returncode == -9
