"""Atomic artifact writes: build in a private staging folder, move into place only when good.

An interrupted or failed run leaves no half-written file under a final name and never
replaces a previous good artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from exporter.errors import OutputError


def ensure_writable_dir(directory: Path) -> Path:
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {directory} ({exc.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {directory} is not writable; choose another with -o")
    return directory


_held_lock = threading.Lock()
_held: dict[str, list] = {}  # real path of a locked folder -> [fd, holders in this process]


@contextlib.contextmanager
def folder_lock(directories, progress=lambda _: None) -> Iterator[None]:
    """Hold an exclusive flock on each output folder while artifacts and reports go into it.

    Two cnnexport processes writing into one folder take turns (the second waits, saying so),
    so an artifact and its report always come from the same process. The lock is on the
    folder itself (nothing is written for it) and is reentrant within a process: the stages a
    ``run --jobs N`` builds in threads share it. The kernel drops it when a process dies.
    """
    import fcntl

    taken = []
    try:
        for directory in sorted({_existing_ancestor(d) for d in directories}):
            with _held_lock:
                if directory in _held:
                    _held[directory][1] += 1
                    taken.append(directory)
                    continue
            try:
                fd = os.open(directory, os.O_RDONLY)
            except OSError:
                continue  # an unreadable folder: the write itself will say why it cannot be used
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"waiting for another cnnexport writing into {directory}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            with _held_lock:
                _held[directory] = [fd, 1]
            taken.append(directory)
        yield
    finally:
        for directory in taken:
            with _held_lock:
                entry = _held[directory]
                entry[1] -= 1
                if entry[1] == 0:
                    del _held[directory]
                    os.close(entry[0])  # closing the descriptor releases the flock


def _existing_ancestor(directory) -> str:
    """The folder, or its nearest existing parent when it does not exist yet (creating it is the export's job)."""
    path = Path(os.path.realpath(directory))
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return str(path)


STAGING_PREFIX = ".cnnexport-tmp-"
OWNER_FILE = ".cnnexport-owner"  # the pid of the process that staged here


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_dead_staging(directory: Path) -> None:
    """Delete staging folders whose owner process is gone (a SIGKILL or a power cut skips cleanup).

    A folder whose owner still runs is left alone: it may be a concurrent export.
    """
    for stale in Path(directory).glob(STAGING_PREFIX + "*"):
        try:
            pid = int((stale / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # no owner recorded (being created, or foreign): not ours to judge
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


class Staging:
    """A temporary folder beside the final artifact; ``commit`` renames files into place.

    Use as a context manager: whatever was not committed is deleted on exit, including on
    KeyboardInterrupt.
    """

    def __init__(self, final_dir: Path):
        self.final_dir = ensure_writable_dir(Path(final_dir))
        sweep_dead_staging(self.final_dir)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.final_dir))
            (self.path / OWNER_FILE).write_text(f"{os.getpid()}\n")
        except OSError as exc:
            raise OutputError(f"cannot write in output folder {self.final_dir} ({exc.strerror})") from None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, names: list[str], rename: dict[str, str] | None = None) -> list[Path]:
        """Move staged files into the final folder; the first name (the primary file) moves last.

        A staged directory (an ``.mlpackage``) replaces an existing one atomically where the OS
        can swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); elsewhere the old package is
        moved aside, the new one moved in, and the old one put back if that fails. Either way
        the old package is never deleted before the new one is in place.
        """
        from exporter.guard import check_target

        rename = rename or {}
        order = list(names[1:]) + list(names[:1])
        for name in order:  # every target first: nothing moves when one of them is an input
            check_target(self.final_dir / rename.get(name, name))
        moved = []
        for name in order:
            target = self.final_dir / rename.get(name, name)
            source = self.path / name
            if target.is_dir() and not source.is_dir():
                raise OutputError(f"{target} is a directory; choose another output name")
            if source.is_dir() and target.exists() and not target.is_dir():
                raise OutputError(f"{target} is a file, not a package folder; choose another output name")
            if source.is_dir() and target.is_dir():
                replace_dir(source, target, self.path / (".old-" + name))
            else:
                os.replace(source, target)
            moved.append(target)
        return moved


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    return result == 0


def replace_dir(source: Path, target: Path, backup: Path) -> None:
    """Put directory ``source`` at ``target`` (an existing directory); the old one ends at ``source``/``backup``."""
    if _exchange(source, target):
        return  # target is the new package; source now holds the old one (deleted with the staging folder)
    os.replace(target, backup)
    try:
        os.replace(source, target)
    except BaseException:
        os.replace(backup, target)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    from exporter.guard import check_target

    path = Path(path)
    check_target(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as PNG, written atomically (no half-written chart under the final name)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
