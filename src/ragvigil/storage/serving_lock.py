"""Which process serves a data dir: ``ragvigil serve`` holds an exclusive lock on ``<data dir>/serving.lock``.

Why: the embedded vector index is files that the serving process keeps in memory and writes back. A
second process writing the same files (an offline ``ingest`` or ``reindex``, a ``restore``, a second
``serve``) would have one overwrite the other's work, silently. The lock is an advisory ``flock``:
the kernel drops it when its holder exits or dies, so a crash never leaves a stale lock behind, and
the file holds the holder's pid for the message. Commands that only read, or that work through the
server's API, never look at it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ragvigil.errors import RagvigilError

try:
    import fcntl
except ImportError:  # not on Windows: there the lock is not taken and nothing is refused
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "serving.lock"


class DataDirServed(RagvigilError):
    """Another process serves this data dir: writing its files from here would lose one side's work."""

    status = 409
    code = "data_dir_served"


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOCK_NAME


class ServingLock:
    """The exclusive lock of the process serving ``data_dir``, held until ``release`` (or the process ends)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = lock_path(data_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now, or raise ``DataDirServed`` naming the process that holds it."""
        if fcntl is None or self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirServed(
                f"another ragvigil server ({_holder(self.path)}) already serves {self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def serving_process(data_dir: Path) -> str | None:
    """Who serves ``data_dir`` now ("pid 1234"), or None when nobody holds its lock."""
    path = lock_path(data_dir)
    if fcntl is None or not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_served(data_dir: Path, doing: str, instead: str) -> None:
    """Raise ``DataDirServed`` when a server holds ``data_dir``: ``doing`` what, and what to do ``instead``."""
    if (who := serving_process(data_dir)) is not None:
        raise DataDirServed(
            f"a ragvigil server ({who}) serves {data_dir}: {doing} here would write the files it holds; {instead}"
        )


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"
