"""A write-ahead journal for chat turns the database could not take.

Why: a message accepted with 2xx must never be lost. When the database write fails, the
turn is written here (one fsynced file per turn) and replayed into the database later.
Replay is idempotent: message ids that are already stored are skipped.

An entry the database refuses (bad data, not an outage) would fail the same way on every
replay and hold back every turn behind it, so it is set aside in ``rejected/`` next to a
``.reason`` file, counted, and the replay carries on. It stays on disk for a person to look at.

The journal is bounded (``max_entries``, ``max_bytes``): a disk that fills up with turns would
take the whole instance down, so past the bound ``write`` raises ``JournalFull`` (a 503 with
Retry-After for the caller: the turn is refused out loud, never dropped). It keeps an index of
its entries by session, so history reads can show journaled turns before replay has run.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ragvigil.chat.sessions import LEGACY_OWNER, SessionStore, StoredMessage
from ragvigil.config import JournalSettings
from ragvigil.errors import DependencyUnavailable
from ragvigil.ops import metrics
from ragvigil.ops.periodic import Periodic
from ragvigil.storage.durable import fsync_dir
from ragvigil.storage.errors import describe, is_outage

log = logging.getLogger(__name__)


class JournalFull(DependencyUnavailable, OSError):
    """The journal is at its bound: the turn cannot be kept, so it is refused (503, never dropped)."""

    code = "journal_full"
    message_template = "the database is unavailable and the journal of pending turns is full; try again later"
    log_event = "chat_turn_refused_journal_full"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # type: ignore[misc]  # the journal's own setting, not the class default


@dataclass(frozen=True)
class JournalEntry:
    """One journaled turn as history reads see it."""

    session_id: str
    owner: str
    user_id: str | None
    new_session: bool  # the turn opened its session: the journal holds the session's beginning
    messages: list[StoredMessage]


class Journal:
    def __init__(
        self,
        directory: Path,
        max_entries: int = 10_000,
        max_bytes: int = 100 * 1024 * 1024,
        retry_after_s: int = 5,
    ) -> None:
        self.dir = directory
        self.rejected_dir = directory / "rejected"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._sizes: dict[Path, int] = {}  # pending entry -> bytes (reserved before it is written)
        self._by_session: dict[str, set[Path]] = {}
        for tmp in self.dir.glob("*.tmp"):  # a write cut short by a crash: never acknowledged, never whole
            tmp.unlink(missing_ok=True)
        self.rescan()

    @classmethod
    def build(cls, directory: Path, settings: JournalSettings) -> Journal:
        """The journal in ``directory`` with the configured bounds."""
        return cls(directory, settings.max_entries, settings.max_bytes, settings.retry_after_s)

    def rescan(self) -> None:
        """Rebuild the index from the directory (another process, e.g. the CLI, may have replayed)."""
        with self._lock:  # entries indexed already are not read again (the replay rescans every pass)
            known = {p: sid for sid, paths in self._by_session.items() for p in paths}
        sizes: dict[Path, int] = {}
        by_session: dict[str, set[Path]] = {}
        for path in self.pending():
            try:
                sizes[path] = path.stat().st_size
                session_id = known.get(path) or json.loads(path.read_text(encoding="utf-8"))["session_id"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # gone meanwhile, or unreadable: the replay sets it aside
            by_session.setdefault(session_id, set()).add(path)
        with self._lock:
            self._sizes, self._by_session = sizes, by_session
        self._export()

    def write(
        self,
        session_id: str,
        kb: str,
        user_id: str | None,
        messages: list[StoredMessage],
        owner: str = LEGACY_OWNER,
        new_session: bool = False,
    ) -> Path:
        """Keep one turn durably (fsynced file and directory) before it is acknowledged.

        Raises ``JournalFull`` past ``max_entries`` / ``max_bytes``, ``OSError`` when the disk fails.
        """
        entry = {
            "session_id": session_id,
            "owner": owner,
            "kb": kb,
            "user_id": user_id,
            "new_session": new_session,
            "messages": [asdict(m) | {"created_at": m.created_at.isoformat()} for m in messages],
        }
        data = json.dumps(entry, ensure_ascii=False).encode("utf-8")
        path = self.dir / f"{messages[0].created_at.strftime('%Y%m%dT%H%M%S%f')}-{messages[0].id}.json"
        self._reserve(path, len(data))
        try:
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(self.dir)
        except BaseException:
            self._forget(path)
            raise
        with self._lock:
            self._by_session.setdefault(session_id, set()).add(path)
        self._export()
        return path

    def _reserve(self, path: Path, size: int) -> None:
        with self._lock:
            if path in self._sizes:  # the same turn again (a shutdown snapshot of a turn journaled already)
                self._sizes[path] = size
                return
            if len(self._sizes) + 1 > self.max_entries or sum(self._sizes.values()) + size > self.max_bytes:
                metrics.JOURNAL_FULL.inc()
                raise JournalFull(
                    f"the journal is full ({len(self._sizes)} turns, {sum(self._sizes.values())} bytes; "
                    f"bounds {self.max_entries} turns, {self.max_bytes} bytes) and the database is unavailable",
                    self.retry_after_s,
                )
            self._sizes[path] = size

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._sizes.pop(path, None)
            for paths in self._by_session.values():
                paths.discard(path)
        self._export()

    def _export(self) -> None:
        with self._lock:
            count, size = len(self._sizes), sum(self._sizes.values())
        metrics.JOURNAL_PENDING.set(count)
        metrics.JOURNAL_BYTES.set(size)
        metrics.JOURNAL_FILL.set(max(count / self.max_entries, size / self.max_bytes))

    def entries_for(self, session_id: str) -> list[JournalEntry]:
        """The journaled turns of ``session_id``, oldest first (an entry replayed meanwhile is left out)."""
        with self._lock:
            paths = sorted(self._by_session.get(session_id, ()))
        out = []
        for path in paths:
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                sid, _kb, user_id, msgs, owner = _entry_args(raw)
            except FileNotFoundError:
                continue  # replayed: the database has it now
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: the replay sets it aside
            out.append(JournalEntry(sid, owner, user_id, bool(raw.get("new_session")), msgs))
        return out

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
        self.rescan()
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
            self._forget(path)
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
        fsync_dir(self.rejected_dir)
        fsync_dir(self.dir)
        self._forget(path)
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
