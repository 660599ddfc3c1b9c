"""Real database outages that end with the same data back: a PostgreSQL cluster stopped and started
again on its own data directory, and a SQLite file taken away and put back.

``realservers.postgres_server`` throws its cluster away when it stops, which is right for a test
that only needs the database gone; a test of what happens *after* the outage needs the rows that
were stored before it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realservers import (
    HOST,
    ServerUnavailable,
    _as_postgres_user,
    _exit_reason,
    _pg_ready,
    _stop_group,
    find_postgres_bindir,
    free_port,
    wait_until,
)

INITDB = ("--locale=C.UTF-8", "--no-sync")


class RestartablePostgres:
    """One throw-away cluster (trust auth, user postgres) that can be stopped and started again."""

    def __init__(self) -> None:
        self.bindir = find_postgres_bindir()
        self.tmp = Path(tempfile.mkdtemp(prefix="rv-pgr-"))
        self.data, self.sock = self.tmp / "data", self.tmp / "sock"
        self.sock.mkdir()
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            for p in (self.tmp, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        cmd, kw = _as_postgres_user(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", *INITDB]
        )
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, **kw)
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@{HOST}:{self.port}/postgres"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        cmd, kw = _as_postgres_user(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", HOST, *self._options()]
        )
        log = open(self.tmp / "postgres.log", "ab")  # noqa: SIM115 - the server writes to it while it runs
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kw
        )
        log.close()
        proc = self.proc
        wait_until(lambda: _pg_ready(self.port), 60, "PostgreSQL to start", abort=lambda: _exit_reason(proc))
        return self.url

    def _options(self) -> list[str]:
        return ["-k", str(self.sock), "-c", "fsync=off", "-c", "max_connections=100"]

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGINT, grace=10.0)  # fast shutdown: clients are cut off
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def postgres_or_skip() -> RestartablePostgres:
    """A cluster to take down and bring back; the test is skipped where PostgreSQL is not installed (never in CI)."""
    try:
        return RestartablePostgres()
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@contextlib.contextmanager
def restartable_postgres() -> Iterator[RestartablePostgres]:
    pg = RestartablePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


class SqliteOutage:
    """Take a SQLite database away (a directory stands at its path: it cannot be opened) and put it back."""

    def __init__(self, db_file: Path, engine: object) -> None:
        self.db_file = db_file
        self.engine = engine
        self.aside = db_file.parent / (db_file.name + ".aside")

    def stop(self) -> None:
        self.engine.dispose()  # type: ignore[attr-defined]
        self.aside.mkdir()
        for suffix in ("", "-wal", "-shm"):
            src = self.db_file.with_name(self.db_file.name + suffix)
            if src.exists():
                os.replace(src, self.aside / src.name)
        self.db_file.mkdir()

    def start(self) -> None:
        self.db_file.rmdir()
        for f in self.aside.iterdir():
            os.replace(f, self.db_file.parent / f.name)
        self.aside.rmdir()
        self.engine.dispose()  # type: ignore[attr-defined]
