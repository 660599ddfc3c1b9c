"""One server per data dir: while `ragvigil serve` holds it, the commands that would write its files refuse.

The embedded vector index is files the server keeps in memory and writes back; an offline `ingest`,
`reindex` or `restore` (or a second `serve`) writing them at the same time would lose one side's work.
Real `ragvigil serve` and CLI processes; the lock is the kernel's, so a killed server leaves none behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ragvigil.storage.serving_lock import ServingLock, serving_process
from tests.realservers import SRC

QUIET = {"RAGVIGIL_ALERTS__ENABLED": "false", "RAGVIGIL_BACKGROUND_EMBEDDING": "false"}


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    full = os.environ | {"PYTHONPATH": path, "RAGVIGIL_DATA_DIR": str(data_dir), "COLUMNS": "300"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "ragvigil.cli", *args], env=full, capture_output=True, text=True, timeout=300
    )


def test_the_lock_names_its_holder_and_goes_with_it(tmp_path: Path) -> None:
    assert serving_process(tmp_path) is None
    lock = ServingLock(tmp_path)
    lock.acquire()
    try:
        assert serving_process(tmp_path) == f"pid {os.getpid()}"
        seen = subprocess.run(  # another process sees it too (a flock is per open file, not per process)
            [
                sys.executable,
                "-c",
                f"from ragvigil.storage.serving_lock import serving_process as s; print(s({str(tmp_path)!r}))",
            ],
            env=os.environ | {"PYTHONPATH": str(SRC)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert seen.stdout.strip() == f"pid {os.getpid()}", seen.stderr
    finally:
        lock.release()
    assert serving_process(tmp_path) is None


def test_commands_that_would_write_a_served_data_dir_refuse_and_name_the_server(  # type: ignore[no-untyped-def]
    serve_instance, tmp_path: Path
) -> None:
    data = tmp_path / "served"
    server = serve_instance(data_dir=data, env=QUIET)
    doc = tmp_path / "note.md"
    doc.write_text("# Opening hours\n\nWe answer every day from nine to five.\n")
    served = serving_process(data)
    assert served is not None and served.startswith("pid ")

    ingest = cli(data, "ingest", str(doc), env=QUIET)
    assert ingest.returncode == 1 and "refused" in ingest.stderr and served in ingest.stderr, ingest.stderr
    assert "POST /api/v1/kb/" in ingest.stderr  # and what to do instead

    second = cli(data, "serve", "--host", "127.0.0.1", "--port", "1", env=QUIET)
    assert second.returncode == 2 and "already serves" in second.stderr, second.stderr

    restore = cli(data, "restore", str(tmp_path / "no-such-backup.tar"), env=QUIET)
    assert restore.returncode == 1 and "stop it first" in restore.stderr, restore.stderr

    assert server.death() is None  # none of them touched the server
