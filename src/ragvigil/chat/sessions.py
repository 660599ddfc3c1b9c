"""Chat sessions and their messages in the database.

A session belongs to the caller that opened it (``"anonymous"`` when auth is off, ``"key:<id>"``
for an API key) together with the ``user_id`` that caller gave: a conversation is private to
that pair. The API layer maps callers to owners and decides on support reads; this module only
stores the owner and refuses history to anyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm.attributes import set_committed_value

from ragvigil.chat.source_refs import document_ids, resolve, to_refs
from ragvigil.errors import NotFound
from ragvigil.storage.db import Database
from ragvigil.storage.models import LEGACY_OWNER, ChatSession, Document, Message, new_id, utcnow

log = logging.getLogger(__name__)

ANONYMOUS_OWNER = "anonymous"
__all__ = [
    "ANONYMOUS_OWNER",
    "LEGACY_OWNER",
    "SessionNotFound",
    "SessionOwner",
    "SessionStore",
    "StoredMessage",
    "TurnRecord",
]


def key_owner(key_id: str) -> str:
    """The owner string of sessions opened with the API key ``key_id``."""
    return f"key:{key_id}"


class SessionNotFound(NotFound):
    """No such session, or not the caller's: both look the same, so ids cannot be probed."""

    code = "session_not_found"
    message_template = "no chat session with id {arg}"


@dataclass(frozen=True)
class SessionOwner:
    """Who a session belongs to: the caller that opened it plus the ``user_id`` it gave."""

    owner: str
    user_id: str | None = None


@dataclass
class StoredMessage:
    """One message as it is written, either to the database or to the journal."""

    id: str
    role: str
    content: str
    created_at: datetime
    sources: list[Any] = field(default_factory=list)
    latency_ms: float | None = None
    degraded: bool = False
    request_id: str | None = None
    analysis: dict[str, Any] | None = None  # a user message's ``TurnAnalysis.to_dict()``
    flagged: str | None = None  # the safety category a user message was flagged with


@dataclass(frozen=True)
class TurnRecord:
    """One turn's write: its messages and the session (and owner) they go to."""

    session_id: str
    kb: str
    user_id: str | None
    messages: list[StoredMessage]
    owner: str


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def exists(self, session_id: str) -> bool:
        with self.db.session() as s:
            return s.get(ChatSession, session_id) is not None

    def owner(self, session_id: str) -> SessionOwner:
        with self.db.session() as s:
            row = s.get(ChatSession, session_id)
            if row is None:
                raise SessionNotFound(session_id)
            return SessionOwner(row.owner, row.user_id)

    def history(self, session_id: str, turns: int, owner: SessionOwner | None = None) -> list[tuple[str, str]]:
        """The last ``turns`` user/assistant pairs, oldest first; another ``owner``'s session is not found."""
        return [(m.role, m.content) for m in self.recent(session_id, turns * 2, owner)]

    def recent(self, session_id: str, limit: int, owner: SessionOwner | None = None) -> list[StoredMessage]:
        """The last ``limit`` messages (ids and times too, so journaled copies can be merged), oldest first."""
        with self.db.session() as s:
            row = s.get(ChatSession, session_id)
            if row is None or (owner is not None and SessionOwner(row.owner, row.user_id) != owner):
                raise SessionNotFound(session_id)
            if limit <= 0:
                return []
            rows = s.execute(
                select(
                    Message.id,
                    Message.role,
                    Message.content,
                    Message.created_at,
                    Message.sources,
                    Message.source_refs,
                    Message.analysis,
                    Message.flagged,
                )
                .where(Message.session_id == session_id)
                .order_by(Message.seq.desc())
                .limit(limit)
            ).all()
        return [
            StoredMessage(
                r.id,
                r.role,
                r.content,
                r.created_at,
                sources=r.source_refs or r.sources or [],  # unresolved: readers here ask only whether there were any
                analysis=r.analysis,
                flagged=r.flagged,
            )
            for r in reversed(rows)
        ]

    def append(
        self, session_id: str, kb: str, user_id: str | None, messages: list[StoredMessage], *, owner: str
    ) -> str:
        """Write messages in order, creating the session if needed; skips ids already stored.

        Returns the session the messages are in. That is ``session_id`` unless the session belongs
        to someone else: a turn taken while the database was down could not be checked against
        the session's owner, and it must neither join another's conversation nor be lost, so it
        goes to a new session of its own sender.
        """
        return self.append_many([TurnRecord(session_id, kb, user_id, messages, owner)])[0]

    def append_many(self, turns: Sequence[TurnRecord]) -> list[str]:
        """Write several turns in one transaction, in order (``append`` for each); all or none commit.

        Core statements, a fixed number per batch whatever its size: what is stored already (message
        ids, sessions and their owners, each existing session's highest ``seq``) is read in one query
        each, the rows are numbered here, then inserted with one statement per table. Building ORM
        objects and flushing them turn by turn cost more CPU than the rest of a turn's bookkeeping.
        Two turns of one session are numbered one after the other, as if written one at a time.
        """
        with self.db.session(write=True) as s:
            conn = s.connection()
            ids = document_ids(src for t in turns for m in t.messages for src in m.sources)
            hashes = (
                dict(conn.execute(select(Document.id, Document.content_hash).where(Document.id.in_(ids))).all())
                if ids
                else {}
            )
            message_ids = [m.id for t in turns for m in t.messages]
            stored = (
                dict(conn.execute(select(Message.id, Message.session_id).where(Message.id.in_(message_ids))).all())
                if message_ids
                else {}
            )
            wanted = {t.session_id for t in turns}
            owners: dict[str, tuple[str, str | None]] = {
                r.id: (r.owner, r.user_id)
                for r in conn.execute(
                    select(ChatSession.id, ChatSession.owner, ChatSession.user_id).where(ChatSession.id.in_(wanted))
                )
            }
            seqs: dict[str, int] = (
                dict(
                    conn.execute(  # type: ignore[arg-type]
                        select(Message.session_id, func.max(Message.seq))
                        .where(Message.session_id.in_(list(owners)))
                        .group_by(Message.session_id)
                    ).all()
                )
                if owners
                else {}
            )
            plan = _BatchPlan(owners, seqs, stored, hashes)
            result = [plan.add(t) for t in turns]
            if plan.new_sessions:
                conn.execute(insert(ChatSession), plan.new_sessions)
            if plan.touched:
                now = utcnow()
                conn.execute(
                    update(ChatSession).where(ChatSession.id == bindparam("sid")).values(updated_at=bindparam("now")),
                    [{"sid": sid, "now": now} for sid in plan.touched],
                )
            if plan.rows:
                conn.execute(insert(Message), plan.rows)
            return result

    def messages(self, session_id: str) -> list[Message]:
        with self.db.session() as s:
            if s.get(ChatSession, session_id) is None:
                raise SessionNotFound(session_id)
            rows = list(s.scalars(select(Message).where(Message.session_id == session_id).order_by(Message.seq)))
            if any(r.source_refs is not None for r in rows):  # one query for the whole page
                for row, sources in zip(rows, resolve(s, [r.source_refs for r in rows]), strict=True):
                    if row.source_refs is not None:
                        set_committed_value(row, "sources", sources)
            return rows


class _BatchPlan:
    """The rows of one batch of turns, numbered against what the database holds (read once per batch).

    The rules of a single ``append``: ids stored already are skipped (a turn stored whole returns
    the session it is in), a session of another owner sends the turn to a new session of its own,
    a new session is created with the time of its first message, an existing one is touched.
    """

    def __init__(
        self,
        owners: dict[str, tuple[str, str | None]],
        seqs: dict[str, int],
        stored: dict[str, str],
        hashes: dict[str, str],
    ) -> None:
        self.owners = owners  # session id -> (owner, user_id), the batch's new sessions added as planned
        self.seqs = seqs  # session id -> highest seq so far
        self.stored = stored  # message id -> its session, the batch's rows added as planned
        self.hashes = hashes
        self.new_sessions: list[dict[str, Any]] = []  # updated_at: the column's default, as before
        self.created: set[str] = set()
        self.touched: dict[str, None] = {}  # existing sessions to touch, in order
        self.rows: list[dict[str, Any]] = []

    def add(self, turn: TurnRecord) -> str:
        session_id, messages = turn.session_id, turn.messages
        known = {m.id for m in messages if m.id in self.stored}
        if messages and len(known) == len(messages):  # replayed again: everything is stored already
            return self.stored[messages[0].id] or session_id
        found = self.owners.get(session_id)
        if found is not None and found != (turn.owner, turn.user_id):
            log.warning("session_owner_mismatch", extra={"session_id": session_id, "moved_to_new_session": True})
            session_id, found = new_id(), None
        if found is None:
            self.owners[session_id] = (turn.owner, turn.user_id)
            self.new_sessions.append(
                {
                    "id": session_id,
                    "kb": turn.kb,
                    "owner": turn.owner,
                    "user_id": turn.user_id,
                    "created_at": messages[0].created_at,
                }
            )
            self.created.add(session_id)
        elif session_id not in self.created:
            self.touched[session_id] = None
        seq = self.seqs.get(session_id, 0)
        for m in messages:
            if m.id in known:
                continue
            seq += 1
            refs = to_refs(m.sources, self.hashes) if m.sources else None
            self.stored[m.id] = session_id
            self.rows.append(
                {
                    "id": m.id,
                    "session_id": session_id,
                    "seq": seq,
                    "role": m.role,
                    "content": m.content,
                    "sources": [] if refs is not None else m.sources,
                    "source_refs": refs,
                    "latency_ms": m.latency_ms,
                    "degraded": m.degraded,
                    "request_id": m.request_id,
                    "created_at": m.created_at,
                    "analysis": m.analysis,
                    "flagged": m.flagged,
                }
            )
        self.seqs[session_id] = seq
        return session_id
