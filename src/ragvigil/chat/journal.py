"""A write-ahead journal for chat turns the database could not take.

Why: a message accepted with 2xx must never be lost. When the database write fails, the
turn is written here (one fsynced file per turn) and replayed into the database later.
Replay is idempotent: message ids that are already stored are skipped.

An entry the database refuses (bad data, not an outage) would fail the same way on every
replay and hold back every turn behind it, so it is set aside in ``rejected/`` next to a
``.reason`` file, counted, and the replay carries on. It stays on disk for a person to look at.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ragvigil.chat.sessions import LEGACY_OWNER, SessionStore, StoredMessage
from ragvigil.ops import metrics
from ragvigil.ops.periodic import Periodic
from ragvigil.storage.errors import describe, is_outage

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.rejected_dir = directory / "rejected"
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(
        self, session_id: str, kb: str, user_id: str | None, messages: list[StoredMessage], owner: str = LEGACY_OWNER
    ) -> Path:
        entry = {
            "session_id": session_id,
            "owner": owner,
            "kb": kb,
            "user_id": user_id,
            "messages": [asdict(m) | {"created_at": m.created_at.isoformat()} for m in messages],
        }
        path = self.dir / f"{messages[0].created_at.strftime('%Y%m%dT%H%M%S%f')}-{messages[0].id}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(entry, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.dir)
        return path

    def pending(self) -> list[Path]:
        return sorted(self.dir.glob("*.json"))

    def rejected(self) -> list[Path]:
        """Entries set aside because the database refused them (each with a ``.reason`` file)."""
        return sorted(self.rejected_dir.glob("*.json")) if self.rejected_dir.is_dir() else []

    def replay(self, store: SessionStore) -> int:
        """Move journaled turns into the database, oldest first; returns how many were moved.

        Stops at a database outage (raised: the rest waits for the next pass). An entry the
        database refuses is set aside and the replay continues with the next one.
        """
        moved = 0
        for path in self.pending():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                args = _entry_args(entry)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("journal_entry_unreadable", extra={"path": str(path), "error": str(exc)[:300]})
                self.set_aside(path, "unreadable", f"{type(exc).__name__}: {exc}")
                continue
            try:
                self._append(store, args)
            except SQLAlchemyError as exc:
                if is_outage(exc):
                    raise
                reason = "write_error" if isinstance(exc, IntegrityError) else "data_error"
                self.set_aside(path, reason, describe(exc))
                continue
            except ValueError as exc:  # e.g. text the driver cannot encode, raised before the database sees it
                self.set_aside(path, "data_error", type(exc).__name__)
                continue
            path.unlink()
            moved += 1
        return moved

    @staticmethod
    def _append(store: SessionStore, args: tuple[Any, ...]) -> None:
        *positional, owner = args
        try:
            store.append(*positional, owner=owner)
        except IntegrityError:  # a race with a live turn for the session's next seq passes on a second try
            store.append(*positional, owner=owner)

    def set_aside(self, path: Path, reason: str, detail: str) -> Path:
        """Move an entry to ``rejected/`` with a ``.reason`` file; count it. It is never deleted here."""
        self.rejected_dir.mkdir(exist_ok=True)
        target = self.rejected_dir / path.name
        note = target.with_name(target.name + ".reason")
        note.write_text(f"{reason}: {detail}\n", encoding="utf-8")
        os.replace(path, target)
        _fsync_dir(self.rejected_dir)
        _fsync_dir(self.dir)
        metrics.JOURNAL_REJECTED.labels(reason).inc()
        metrics.JOURNAL_REJECTED_TURNS.set(len(self.rejected()))
        log.error("journal_entry_rejected", extra={"path": str(target), "reason": reason, "error": detail[:300]})
        return target


class JournalReplayer:
    """Moves journaled turns into the database every few seconds while the instance serves.

    Why a loop of its own: after a database outage the journal holds turns users were told were
    saved; they must reach the database without anyone asking, and a replay stuck on a slow
    database must not hold up any other background job. ``replay`` is also the action a person
    (or a remediation) runs by hand.
    """

    def __init__(self, journal: Journal, store: SessionStore, interval_s: float = 5.0) -> None:
        self.journal = journal
        self.store = store
        self._job = Periodic("journal-replay", interval_s, self.tick)
        metrics.JOURNAL_REJECTED_TURNS.set(len(journal.rejected()))

    def replay(self) -> int:
        """Replay journaled turns now; an entry the database refuses is set aside, not retried forever."""
        try:
            moved = self.journal.replay(self.store)
        finally:
            metrics.JOURNAL_PENDING.set(len(self.journal.pending()))
            metrics.JOURNAL_REJECTED_TURNS.set(len(self.journal.rejected()))
        if moved:
            log.info("journal_replayed", extra={"turns": moved})
        return moved

    def tick(self) -> None:
        """One pass of the loop: refresh the set-aside gauge, replay when something waits."""
        # the alert clears once a person has dealt with the set-aside entries
        metrics.JOURNAL_REJECTED_TURNS.set(len(self.journal.rejected()))
        if self.journal.pending():
            self.replay()

    def start(self) -> None:
        self._job.start()

    def stop(self) -> None:
        self._job.stop()


def _entry_args(entry: dict[str, Any]) -> tuple[str, str, str | None, list[StoredMessage], str]:
    """``SessionStore.append``'s arguments, the owner last."""
    msgs = [StoredMessage(**(m | {"created_at": datetime.fromisoformat(m["created_at"])})) for m in entry["messages"]]
    if not msgs:
        raise ValueError("entry has no messages")
    # entries written before sessions had owners carry none: their sessions become legacy ones
    return entry["session_id"], entry["kb"], entry["user_id"], msgs, entry.get("owner", LEGACY_OWNER)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
