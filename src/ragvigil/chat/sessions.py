"""Chat sessions and their messages in the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from ragvigil.storage.db import Database
from ragvigil.storage.models import ChatSession, Message, utcnow


class SessionNotFound(LookupError):
    pass


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


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def exists(self, session_id: str) -> bool:
        with self.db.session() as s:
            return s.get(ChatSession, session_id) is not None

    def history(self, session_id: str, turns: int) -> list[tuple[str, str]]:
        """The last ``turns`` user/assistant pairs, oldest first."""
        with self.db.session() as s:
            if s.get(ChatSession, session_id) is None:
                raise SessionNotFound(session_id)
            if turns <= 0:
                return []
            rows = s.execute(
                select(Message.role, Message.content)
                .where(Message.session_id == session_id)
                .order_by(Message.seq.desc())
                .limit(turns * 2)
            ).all()
        return [(r.role, r.content) for r in reversed(rows)]

    def append(self, session_id: str, kb: str, user_id: str | None, messages: list[StoredMessage]) -> None:
        """Write messages in order, creating the session if needed; skips ids already stored."""
        with self.db.session(write=True) as s:
            session = s.get(ChatSession, session_id)
            if session is None:
                s.add(ChatSession(id=session_id, kb=kb, user_id=user_id, created_at=messages[0].created_at))
                s.flush()
            else:
                session.updated_at = utcnow()
            known = set(s.scalars(select(Message.id).where(Message.id.in_([m.id for m in messages]))))
            seq = s.scalar(select(func.coalesce(func.max(Message.seq), 0)).where(Message.session_id == session_id))
            for m in messages:
                if m.id in known:
                    continue
                seq += 1
                s.add(
                    Message(
                        id=m.id,
                        session_id=session_id,
                        seq=seq,
                        role=m.role,
                        content=m.content,
                        sources=m.sources,
                        latency_ms=m.latency_ms,
                        degraded=m.degraded,
                        request_id=m.request_id,
                        created_at=m.created_at,
                    )
                )

    def messages(self, session_id: str) -> list[Message]:
        with self.db.session() as s:
            if s.get(ChatSession, session_id) is None:
                raise SessionNotFound(session_id)
            return list(s.scalars(select(Message).where(Message.session_id == session_id).order_by(Message.seq)))
