"""Backups of a SQLite instance: made while it serves, refused when damaged, restored exactly."""

from __future__ import annotations

import json
import re
import sqlite3
import tarfile
import threading
from pathlib import Path

import pytest

from ragvigil.app import Runtime
from ragvigil.knowledge.smoke import retrieval_smoke
from ragvigil.ops.backup import (
    BackupInvalid,
    RestoreRefused,
    create_backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from ragvigil.ops.backup.archive import open_checked
from tests.backup_cases import assert_same_service, members, populate, rewrite
from tests.conftest import make_settings


def test_a_backup_made_while_turns_are_written_is_consistent_and_complete(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    (rt.settings.data_dir / "journal").mkdir(exist_ok=True)
    (rt.settings.data_dir / "journal" / "waiting.json").write_text('{"turn": 1}')
    (rt.settings.data_dir / "originals" / "ab").mkdir(parents=True)
    (rt.settings.data_dir / "originals" / "ab" / "abcdef").write_bytes(b"an original")
    stop = threading.Event()
    written = [0]

    def writer() -> None:  # one write after another while the backup runs (WAL mode), bounded
        while not stop.is_set() and written[0] < 2000:
            rt.audit.record("writer", "test.write", "ok", None, None, {})
            written[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        result = create_backup(rt.settings, flush_vectors=rt.vectors.flush)
    finally:
        stop.set()
        t.join()
    path, m = result.path, result.manifest
    assert re.fullmatch(r"ragvigil-backup-\d{8}T\d{6}Z-[0-9a-f]{8}\.tar", path.name)
    assert path.parent == rt.settings.data_dir / "backups"
    assert not list(path.parent.glob("*.partial"))
    got = members(path)
    assert {"manifest.json", "database/ragvigil.db", "index/default.flat.faiss", "config/settings.json"} <= set(got)
    assert got["data/journal/waiting.json"] == b'{"turn": 1}'
    assert got["data/originals/ab/abcdef"] == b"an original"
    assert not any(n.startswith(("data/backups", "data/logs", "data/cache")) for n in got)
    assert "data/admin.key" not in got  # a secret: only in an encrypted backup
    assert m.backend == "sqlite" and m.schema_revision and not m.encrypted
    assert m.vector_counts == {"default.flat": rt.vectors.count("default")} and m.vector_counts["default.flat"] > 0
    # the counts are those of the copy itself, taken in one snapshot by the online backup API
    copy = path.parent / "copy.db"
    copy.write_bytes(got["database/ragvigil.db"])
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for table, n in m.row_counts.items():
        assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == n, table
    conn.close()
    assert open_checked(path, path).backup_id == m.backup_id
    assert [b.path for b in list_backups(path.parent)] == [path]


def test_verify_restores_to_scratch_and_records_when(sample_runtime: Runtime) -> None:
    result = create_backup(sample_runtime.settings, flush_vectors=sample_runtime.vectors.flush)
    report = verify_backup(result.path, sample_runtime.settings, smoke=retrieval_smoke)
    assert report.ok, report.error
    joined = " | ".join(report.checks)
    assert "PRAGMA integrity_check ok" in joined and "row counts match" in joined and "vector counts match" in joined
    assert "retrieval smoke test: chunk" in joined
    record = json.loads((result.path.parent / (result.path.name + ".verified.json")).read_text())
    assert record["ok"] is True and record["verified_at"] and record["backup_id"] == result.manifest.backup_id


@pytest.mark.parametrize(
    "damage, check",
    [
        ("truncated", "tar readable"),
        ("flipped", "sha256 of database/ragvigil.db"),
        ("extra member", "no member outside the manifest"),
        ("missing member", "every listed member present"),
        ("traversal", "member names"),
        ("no manifest", "manifest present"),
        ("wrong counts", "row counts"),
        ("partial", "complete file"),
    ],
)
def test_verify_refuses_a_damaged_backup_naming_the_file_and_the_check(
    sample_runtime: Runtime, tmp_path: Path, damage: str, check: str
) -> None:
    good = create_backup(sample_runtime.settings).path
    bad = tmp_path / f"ragvigil-backup-{damage.replace(' ', '-')}.tar"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "flipped":
        with tarfile.open(good) as tar:
            offset = tar.getmember("database/ragvigil.db").offset_data
        data = bytearray(good.read_bytes())
        data[offset + 5000] ^= 0xFF
        bad.write_bytes(bytes(data))
    elif damage == "extra member":
        rewrite(good, bad, {"data/planted.sh": b"#!/bin/sh\n"})
    elif damage == "missing member":
        rewrite(good, bad, {"config/settings.json": None})
    elif damage == "traversal":
        rewrite(good, bad, {"../../etc/cron.d/x": b"* * * * * root true\n"})
    elif damage == "no manifest":
        rewrite(good, bad, {"manifest.json": None})
    elif damage == "wrong counts":
        counts = json.loads(members(good)["manifest.json"])["row_counts"]
        rewrite(good, bad, {}, manifest={"row_counts": {**counts, "chunks": counts["chunks"] + 1}})
    else:
        bad = good.with_name(good.name + ".partial")
        bad.write_bytes(good.read_bytes())
    report = verify_backup(bad, sample_runtime.settings, smoke=retrieval_smoke)
    assert not report.ok
    assert report.failed_check is not None and report.failed_check.startswith(check), report.error
    assert str(bad) in (report.error or "")
    with pytest.raises(BackupInvalid, match=re.escape(check)):
        restore_backup(bad, make_settings(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()


def test_a_round_trip_leaves_the_service_exactly_as_it_was(sample_runtime: Runtime, tmp_path: Path) -> None:
    state = populate(sample_runtime)
    path = create_backup(sample_runtime.settings, flush_vectors=sample_runtime.vectors.flush).path
    sample_runtime.close()
    fresh = make_settings(tmp_path / "restored")
    report = restore_backup(path, fresh)
    assert report.moved_aside is None and report.schema_revision
    rt = Runtime(fresh)
    try:
        assert_same_service(rt, state)
    finally:
        rt.close()


def test_restore_refuses_a_non_empty_data_dir_and_with_force_moves_it_aside(
    sample_runtime: Runtime, tmp_path: Path
) -> None:
    path = create_backup(sample_runtime.settings, to=tmp_path / "backups").path
    target = make_settings(tmp_path / "busy")
    target.data_dir.mkdir()
    (target.data_dir / "keep-me.txt").write_text("old data")
    with pytest.raises(RestoreRefused, match="not empty"):
        restore_backup(path, target)
    assert (target.data_dir / "keep-me.txt").read_text() == "old data"
    report = restore_backup(path, target, force=True)
    assert report.moved_aside and (Path(report.moved_aside) / "busy" / "keep-me.txt").read_text() == "old data"
    assert (target.data_dir / "ragvigil.db").exists() and not (target.data_dir / "keep-me.txt").exists()


def test_restore_refuses_a_backup_of_a_newer_schema(sample_runtime: Runtime, tmp_path: Path) -> None:
    good = create_backup(sample_runtime.settings).path
    newer = rewrite(good, tmp_path / "newer.tar", {}, manifest={"schema_revision": "0099_from_the_future"})
    with pytest.raises(RestoreRefused, match="0099_from_the_future"):
        restore_backup(newer, make_settings(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()
