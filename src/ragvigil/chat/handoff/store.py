"""The hand-off queue in the database: one open record per session and reason.

Why dedupe: a complaint repeated over five turns is one conversation for a person to take, not
five tickets. A second trigger updates the open record (newest message, most urgent priority);
a crisis raises every open record of its session to priority 1, so whichever one an operator
opens says how urgent the session is. Claim and close are operator actions, audited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.chat.handoff.policy import PRIORITY
from ragvigil.chat.handoff.spool import HandoffSpool, SpoolFull
from ragvigil.errors import NotFound, RagvigilError
from ragvigil.ops import metrics
from ragvigil.ops.periodic import Periodic
from ragvigil.storage.db import Database
from ragvigil.storage.errors import is_outage
from ragvigil.storage.models import HandoffRecord, HandoffStatus, Message, new_id, utcnow

log = logging.getLogger(__name__)

OPEN_STATES = (HandoffStatus.OPEN, HandoffStatus.CLAIMED)  # not closed: a new trigger joins the record
PRIORITIES = tuple(sorted(set(PRIORITY.values())))  # every priority has a series, 0 when nothing waits


class HandoffNotFound(NotFound):
    code = "handoff_not_found"
    message_template = "no hand-off with id {arg}"


class HandoffConflict(RagvigilError):
    """The record is not in a state that allows the action (claiming a closed one, claimed by another)."""

    status = 409
    code = "handoff_conflict"


@dataclass(frozen=True)
class NewHandoff:
    """What a turn hands over: who, which message, why, how urgently."""

    session_id: str
    owner: str
    user_id: str | None
    message_id: str | None
    reason: str
    priority: int
    id: str = ""
    at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "owner": self.owner,
            "user_id": self.user_id,
            "message_id": self.message_id,
            "reason": self.reason,
            "priority": self.priority,
            "at": (self.at or utcnow()).isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NewHandoff:
        return cls(
            data["session_id"],
            data["owner"],
            data.get("user_id"),
            data.get("message_id"),
            data["reason"],
            int(data["priority"]),
            data["id"],
            datetime.fromisoformat(data["at"]),
        )


def record_dict(r: HandoffRecord, message: str | None = None, with_message: bool = False) -> dict[str, Any]:
    """A record as the API and the CLI show it; the user's text only when asked for (``with_message``)."""
    out: dict[str, Any] = {
        "id": r.id,
        "session_id": r.session_id,
        "user_id": r.user_id,
        "owner": r.owner,
        "message_id": r.message_id,
        "reason": r.reason,
        "priority": r.priority,
        "status": r.status,
        "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(),
        "claimed_by": r.claimed_by,
        "closed_by": r.closed_by,
        "note": r.note,
    }
    if with_message:
        out["message"] = message
    return out


class HandoffStore:
    def __init__(self, db: Database, spool: HandoffSpool | None = None) -> None:
        self.db = db
        self.spool = spool
        self._spool_changed()  # files left by an earlier run are pending from the start

    def create(self, new: NewHandoff) -> tuple[str, str]:
        """Queue a hand-off; returns (record id, where: ``database`` or ``spool``).

        The database down: the hand-off is spooled (``new.id`` given to it now, so the turn can
        name it) and written by ``replay`` once the database is back.
        """
        new = NewHandoff(**{**new.__dict__, "id": new.id or new_id(), "at": new.at or utcnow()})
        try:
            record_id = self._upsert(new)
        except SQLAlchemyError as exc:
            if self.spool is None or not is_outage(exc):
                raise
            try:
                self.spool.write(new.to_json())
            except SpoolFull:
                log.error("handoff_spool_full", extra={"reason": new.reason, "session_id": new.session_id})
                raise
            self._queued(new)
            self._spool_changed()
            log.warning("handoff_spooled", extra={"reason": new.reason, "error": type(exc).__name__})
            return new.id, "spool"
        self._queued(new)
        if self.spool is not None and self.spool.pending():
            self.replay()
        self.refresh_open()
        return record_id, "database"

    # --- what operators see (ops/metrics.py): counted here, so every caller of the store is counted ---------
    @staticmethod
    def _queued(new: NewHandoff) -> None:
        metrics.HANDOFFS.labels(new.reason, str(new.priority)).inc()

    def _spool_changed(self) -> None:
        metrics.HANDOFF_SPOOL_PENDING.set(len(self.spool.pending()) if self.spool is not None else 0)

    def refresh_open(self) -> dict[int, int] | None:
        """Set ``ragvigil_handoffs_open`` from one grouped count (indexed on status, priority).

        Called after a change made here and by the replayer, never per scrape. The database failing:
        the gauge keeps its last values (None returned, logged) until the next refresh can read.
        """
        try:
            with self.db.session() as s:
                rows = s.execute(
                    select(HandoffRecord.priority, func.count())
                    .where(HandoffRecord.status == HandoffStatus.OPEN)
                    .group_by(HandoffRecord.priority)
                ).all()
        except SQLAlchemyError as exc:  # a gauge never fails the action it follows (a queued hand-off stays queued)
            log.warning("handoffs_open_not_refreshed", extra={"error": type(exc).__name__})
            return None
        counts = dict.fromkeys(PRIORITIES, 0) | {int(p): int(n) for p, n in rows}
        for priority, n in counts.items():
            metrics.HANDOFFS_OPEN.labels(str(priority)).set(n)
        return counts

    def _upsert(self, new: NewHandoff) -> str:
        with self.db.session(write=True) as s:
            if s.get(HandoffRecord, new.id) is not None:  # replayed again
                return new.id
            now = utcnow()
            if new.priority == 1:  # a crisis: everything open in the session becomes urgent too
                for other in s.scalars(
                    select(HandoffRecord).where(
                        HandoffRecord.session_id == new.session_id, HandoffRecord.status.in_(OPEN_STATES)
                    )
                ):
                    other.priority, other.updated_at = 1, now
            existing = s.scalar(
                select(HandoffRecord)
                .where(
                    HandoffRecord.session_id == new.session_id,
                    HandoffRecord.reason == new.reason,
                    HandoffRecord.status.in_(OPEN_STATES),
                )
                .order_by(HandoffRecord.created_at)
                .limit(1)
            )
            if existing is not None:
                existing.priority = min(existing.priority, new.priority)
                existing.message_id = new.message_id or existing.message_id
                existing.updated_at = now
                return existing.id
            s.add(
                HandoffRecord(
                    id=new.id,
                    session_id=new.session_id,
                    owner=new.owner,
                    user_id=new.user_id,
                    message_id=new.message_id,
                    reason=new.reason,
                    priority=new.priority,
                    status=HandoffStatus.OPEN,
                    created_at=new.at,
                    updated_at=now,
                )
            )
            return new.id

    def replay(self) -> int:
        """Write spooled hand-offs, oldest first; stops (raises) at an outage. Returns how many were written."""
        if self.spool is None:
            return 0
        moved = 0
        for path in self.spool.pending():
            data = self.spool.read(path)
            if data is None:
                continue
            self._upsert(NewHandoff.from_json(data))
            path.unlink(missing_ok=True)
            moved += 1
            self._spool_changed()
        if moved:
            log.info("handoffs_replayed", extra={"handoffs": moved})
        return moved

    def list(
        self,
        status: str | None = None,
        priority: int | None = None,
        limit: int = 50,
        offset: int = 0,
        with_message: bool = False,
    ) -> dict[str, Any]:
        """A page of the queue, most urgent and oldest first, with the total and the next page's offset."""
        where = []
        if status is not None:
            where.append(HandoffRecord.status == status)
        if priority is not None:
            where.append(HandoffRecord.priority == priority)
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(HandoffRecord).where(*where)) or 0
            rows = list(
                s.scalars(
                    select(HandoffRecord)
                    .where(*where)
                    .order_by(HandoffRecord.priority, HandoffRecord.created_at, HandoffRecord.id)
                    .limit(limit)
                    .offset(offset)
                )
            )
            texts = self._texts(s, rows) if with_message else {}
        items = [record_dict(r, texts.get(r.message_id or ""), with_message) for r in rows]
        more = offset + len(rows) < total
        return {"items": items, "total": total, "next_offset": offset + len(rows) if more else None}

    @staticmethod
    def _texts(s: Any, rows: list[HandoffRecord]) -> dict[str, str]:
        ids = [r.message_id for r in rows if r.message_id]
        if not ids:
            return {}
        return {
            row.id: row.content for row in s.execute(select(Message.id, Message.content).where(Message.id.in_(ids)))
        }

    def resolve(self, prefix: str) -> str:
        """The one record id starting with ``prefix`` (the CLI shows 8 characters); none or several: not found."""
        with self.db.session() as s:
            ids = list(s.scalars(select(HandoffRecord.id).where(HandoffRecord.id.startswith(prefix)).limit(2)))
        if len(ids) != 1:
            raise HandoffNotFound(prefix)
        return ids[0]

    def get(self, handoff_id: str, with_message: bool = False) -> dict[str, Any]:
        with self.db.session() as s:
            row = s.get(HandoffRecord, handoff_id)
            if row is None:
                raise HandoffNotFound(handoff_id)
            texts = self._texts(s, [row]) if with_message else {}
        return record_dict(row, texts.get(row.message_id or ""), with_message)

    def claim(self, handoff_id: str, actor: str) -> dict[str, Any]:
        """An operator takes the record; claiming a closed one, or one another operator holds, is a 409."""
        with self.db.session(write=True) as s:
            row = s.get(HandoffRecord, handoff_id)
            if row is None:
                raise HandoffNotFound(handoff_id)
            if row.status == HandoffStatus.CLOSED:
                raise HandoffConflict(f"hand-off {handoff_id} is closed")
            if row.status == HandoffStatus.CLAIMED and row.claimed_by != actor:
                raise HandoffConflict(f"hand-off {handoff_id} is claimed by {row.claimed_by}")
            row.status, row.claimed_by, row.updated_at = HandoffStatus.CLAIMED, actor, utcnow()
            out = record_dict(row)
        self.refresh_open()
        return out

    def close(self, handoff_id: str, actor: str, note: str | None = None) -> dict[str, Any]:
        """Done with it (a note says how); closing a closed record is a 409."""
        with self.db.session(write=True) as s:
            row = s.get(HandoffRecord, handoff_id)
            if row is None:
                raise HandoffNotFound(handoff_id)
            if row.status == HandoffStatus.CLOSED:
                raise HandoffConflict(f"hand-off {handoff_id} is closed already")
            row.status, row.closed_by, row.updated_at = HandoffStatus.CLOSED, actor, utcnow()
            if note:
                row.note = note[: HandoffRecord.NOTE_CHARS]
            out = record_dict(row)
        self.refresh_open()
        return out


class HandoffReplayer:
    """Writes spooled hand-offs every few seconds once the database is back (``start``/``stop``: background)."""

    def __init__(self, store: HandoffStore, interval_s: float = 5.0) -> None:
        self.store = store
        # at start too: records left open by an earlier run are in the open gauge within the first pass
        self._job = Periodic("handoff-replay", interval_s, self.tick, run_at_start=True)

    def tick(self) -> int:
        """One pass: write what is spooled (the database still down, the rest waits for the next pass), then
        refresh the open gauge, so claims and closes made elsewhere (the CLI, another instance) show too."""
        moved = 0
        if self.store.spool is not None and self.store.spool.pending():
            try:
                moved = self.store.replay()
            except SQLAlchemyError as exc:
                if not is_outage(exc):
                    raise
                log.info("handoff_replay_waiting", extra={"pending": len(self.store.spool.pending())})
                return 0
        self.store.refresh_open()
        return moved

    def start(self) -> None:
        self._job.start()

    def stop(self) -> None:
        self._job.stop()
