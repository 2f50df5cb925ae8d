"""Isolated environments for backends whose pins conflict with ours (litert-torch wants pydantic 2.11).

An env is a venv that we create once and reuse, layered on the current environment: its own
site-packages come first (so its pins shadow ours) and a ``.pth`` file appends our site-packages,
so torch, numpy, ... are shared, not downloaded again. A venv is not relocatable, so it is built
at its final path and a marker file, written last, says it is complete.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import BackendUnavailable, ExportError

Progress = Callable[[str], None]
MARKER = "cnnexport-env.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Runs inside the env: the versions the env really imports, ours shadowed or not.
_VERSIONS = (
    "import importlib.metadata as m, json, sys; "
    "print(json.dumps({n: next((d.version for d in m.distributions(name=n)), None) for n in sys.argv[1:]}))"
)


def _noop(_: str) -> None:
    pass


def cache_root() -> Path:
    """$CNNEXPORT_CACHE, else $XDG_CACHE_HOME/cnnexport, else ~/.cache/cnnexport (as arch_inference's cache)."""
    if os.environ.get("CNNEXPORT_CACHE"):
        return Path(os.environ["CNNEXPORT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnexport"


def base_paths() -> list[str]:
    """Our site-packages (purelib, platlib), which the env appends to its sys.path."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def child_env() -> dict[str, str]:
    """Our environment minus what would leak our editable install, the repo root or ~/.local into the env."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def last_line(stderr: str | None) -> str:
    """The last non-empty stderr line, skipping the 'WARNING: Location ... is ignored' lines some pip configs print."""
    lines = [ln for ln in (stderr or "").splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return lines[-1].strip()[:300] if lines else "no message on stderr"


def call(cmd: list[str], *, timeout: float | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output, text) in child_env(); on Ctrl-C or a timeout the child is killed, then we re-raise."""
    pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), text=True, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()  # what it wrote before, for the error message
        raise subprocess.TimeoutExpired(cmd, timeout or 0.0, out, err) from None
    except BaseException:  # KeyboardInterrupt: no child may outlive us
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class IsolatedScriptError(ExportError):
    """A script run in an isolated env failed; ``stderr`` holds all of its stderr."""

    def __init__(self, message: str, stderr: str, returncode: int | None):
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


@contextmanager
def _locked(lock: Path, progress: Progress) -> Iterator[None]:
    """An exclusive flock: a second process creating the same env waits here, then finds it ready."""
    import fcntl

    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process that is creating {lock.stem}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@dataclass(frozen=True)
class IsolatedEnv:
    """A named venv holding ``requirements``; its path changes with the pins, the Python and our site-packages."""

    name: str
    requirements: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", tuple(self.requirements))
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"an isolated env name is letters, digits, '.', '_' and '-', not {self.name!r}")

    @property
    def path(self) -> Path:
        key = json.dumps([list(self.requirements), f"{sys.version_info[0]}.{sys.version_info[1]}", base_paths()])
        return cache_root() / "envs" / f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def ready(self) -> bool:
        return (self.path / MARKER).is_file() and self.python.exists()

    def marker(self) -> dict:
        try:
            return json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return {}

    def describe(self) -> dict:
        """For reports: which env ran the backend, and the versions it really had."""
        return {
            "isolated_env": str(self.path),
            "requirements": list(self.requirements),
            "versions": self.marker().get("versions", {}),
        }

    def ensure(self, progress: Progress = _noop) -> IsolatedEnv:
        """Create the env unless it is ready; raises BackendUnavailable (and leaves nothing) if that fails."""
        if self.ready():
            return self
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent / f"{path.name}.lock", progress):
            if self.ready():  # another process made it while we waited
                return self
            if path.exists():  # a build that died before its marker
                shutil.rmtree(path)
            progress(f"creating the isolated environment for {self.name} at {path} (one time, needs PyPI)")
            try:
                self._build(progress)
            except OSError as exc:
                shutil.rmtree(path, ignore_errors=True)
                raise BackendUnavailable(f"Could not create the isolated environment for {self.name} at {path}: {exc}.") from exc
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
        return self

    def _build(self, progress: Progress) -> None:
        path, py, what = self.path, str(self.python), f"the isolated environment for {self.name}"
        done = call([sys.executable, "-m", "venv", str(path)])
        if done.returncode != 0:
            raise BackendUnavailable(f"Could not create {what}: `python -m venv` failed ({last_line(done.stderr)}).")
        done = call([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        if done.returncode != 0 or not done.stdout.strip():
            raise BackendUnavailable(f"Could not create {what}: its Python does not start ({last_line(done.stderr)}).")
        (Path(done.stdout.strip()) / "_cnnexport_base.pth").write_text("".join(p + "\n" for p in base_paths()))
        if importlib.util.find_spec("setuptools"):  # ensurepip's setuptools 65 would shadow ours (torch wants >= 77)
            call([py, "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"])
        if self.requirements:
            progress(f"installing {' '.join(self.requirements)} into it")
            pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *self.requirements]
            done = call(pip)
            if done.returncode != 0:
                raise BackendUnavailable(
                    f"Could not create {what}: pip install {' '.join(self.requirements)} failed ({last_line(done.stderr)})."
                )
        names = [m.group(0) for m in map(_NAME.match, self.requirements) if m]
        done = call([py, "-c", _VERSIONS, *names])
        if done.returncode != 0:
            raise BackendUnavailable(f"Could not create {what}: its Python does not start ({last_line(done.stderr)}).")
        marker = {
            "requirements": list(self.requirements),
            "versions": json.loads(done.stdout),
            "base_paths": base_paths(),
            "python": sys.version.split()[0],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = path / f"{MARKER}.tmp"
        tmp.write_text(json.dumps(marker, indent=2) + "\n")
        os.replace(tmp, path / MARKER)

    def run(self, args: list[str], *, timeout: float | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``python ARGS`` in the env (which must be ready), output captured as text; TimeoutExpired past ``timeout``."""
        return call([str(self.python), *args], timeout=timeout, cwd=cwd)

    def run_script(
        self, script: Path, *args: str, timeout: float | None = None, progress: Progress = _noop
    ) -> subprocess.CompletedProcess:
        """Ensure the env, run SCRIPT ARGS in it; a failure is an ExportError naming its last stderr line."""
        self.ensure(progress)
        try:
            done = self.run([str(script), *map(str, args)], timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr if isinstance(exc.stderr, str) else ""
            msg = f"{Path(script).name} ran past {timeout:g} s in the {self.name} environment: {last_line(err)}"
            raise IsolatedScriptError(msg, err, None) from None
        if done.returncode != 0:
            raise IsolatedScriptError(
                f"{Path(script).name} failed in the {self.name} environment (exit {done.returncode}): {last_line(done.stderr)}",
                done.stderr,
                done.returncode,
            )
        return done


def main(argv: list[str] | None = None) -> int:
    """``python -m exporter.isolated create|path NAME REQ...``: scripts/setup.sh pre-creates envs with it."""
    parser = argparse.ArgumentParser(prog="python -m exporter.isolated", description=main.__doc__)
    parser.add_argument("action", choices=["create", "path"], help="create (or reuse) the env / only print where it is")
    parser.add_argument("name")
    parser.add_argument("requirements", nargs="*")
    ns = parser.parse_args(argv)
    env = IsolatedEnv(ns.name, tuple(ns.requirements))
    if ns.action == "path":
        print(env.path)
        return 0 if env.ready() else 1
    try:
        env.ensure(lambda s: print(s, file=sys.stderr, flush=True))
    except BackendUnavailable as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    print(env.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
