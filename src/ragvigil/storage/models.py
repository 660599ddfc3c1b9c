"""The relational schema. The same models run on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every backend.

    SQLite has no timezone type, so ``DateTime(timezone=True)`` reads back naive values there while
    PostgreSQL gives aware ones; the API would then print timestamps without an offset on one
    backend only. Values are stored as UTC and read back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    @staticmethod
    def _utc(value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return self._utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return self._utc(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class KnowledgeBase(Base):
    __tablename__ = "knowledge_bases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DocumentStatus:
    """Lifecycle of a document: searchable by BM25 at once, by vectors once embedded."""

    SEARCHABLE = "searchable"  # chunks stored and in the BM25 index; vectors pending
    READY = "ready"  # vectors filled in too
    FAILED = "failed"
    QUARANTINED = "quarantined"  # shown by the API only: a document kept out of answers (``Document.quarantined``)


class DocumentQuality:
    """What the loader found in a document's text; a source quotes it so a reader knows (``sources[].quality``)."""

    CLEAN = "clean"
    REPAIRED = "repaired"  # mojibake repaired, nothing measurably lost
    DAMAGED = "damaged"  # characters were lost in the repair


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("kb_id", "source", name="uq_documents_kb_source"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(1024))
    title: Mapped[str] = mapped_column(String(512), default="")
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.SEARCHABLE)
    vector_status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    # kept apart from ``status`` (the vector filler's lifecycle): a quarantined document is never retrieved
    quality: Mapped[str] = mapped_column(String(16), default=DocumentQuality.CLEAN, server_default="clean")
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)
    quarantine_reason: Mapped[str | None] = mapped_column(Text, default=None)
    released_by: Mapped[str | None] = mapped_column(String(160), default=None)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # the kept original (knowledge/originals.py) this version was built from; None before migration 0008
    original_digest: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    original_filename: Mapped[str | None] = mapped_column(String(1024), default=None)
    original_media_type: Mapped[str | None] = mapped_column(String(128), default=None)
    original_size: Mapped[int | None] = mapped_column(Integer, default=None)

    chunks: Mapped[list[Chunk]] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True
    )


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_kb_id", "kb_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    anchor: Mapped[str] = mapped_column(String(512), default="")
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[str] = mapped_column(Text, default="")  # space-joined BM25 tokens, so rebuilds skip jieba
    embedded: Mapped[bool] = mapped_column(Boolean, default=False)
    # the reindex job building this chunk as part of a new generation; None: served (knowledge/reindex.py)
    staged_by: Mapped[str | None] = mapped_column(String(32), default=None, index=True)

    document: Mapped[Document] = relationship(back_populates="chunks")


class ReindexJob(Base):
    """One ``ragvigil reindex`` of a knowledge base: its state and progress, seen by the CLI and every replica."""

    __tablename__ = "reindex_jobs"

    ERRORS_KEPT: ClassVar[int] = 100  # the first problems, each one line; the counts say how many in all

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kb: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))  # running | done | failed | interrupted
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    requested_by: Mapped[str] = mapped_column(String(160))
    runner: Mapped[str] = mapped_column(String(64), default="")  # host:pid of the process running it
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


# The owner of a session opened before sessions had owners (migration 0004): no caller is this owner,
# so such a session can only be read by an operator or admin (audited) and never continued.
LEGACY_OWNER = "legacy"


class ChatSession(Base):
    """A conversation. It belongs to ``owner`` (the caller that opened it) together with ``user_id``."""

    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(64), server_default=LEGACY_OWNER)
    user_id: Mapped[str | None] = mapped_column(String(128), default=None, index=True)
    kb: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_session_seq", "session_id", "seq"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # order within the session; timestamps can tie
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    sources: Mapped[list[Any]] = mapped_column(JSON, default=list)  # copied sources: rows before migration 0009
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # a user message's TurnAnalysis.to_dict() (safety, emotion, intent); None for answers and older rows
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    flagged: Mapped[str | None] = mapped_column(String(32), default=None, index=True)  # safety category
    # an answer's sources by reference (chat/source_refs.py), resolved when read; None: ``sources`` holds copies
    source_refs: Mapped[list[Any] | None] = mapped_column(JSON, default=None)


class HandoffStatus:
    """A hand-off's lifecycle: queued, taken by a person, done."""

    OPEN = "open"
    CLAIMED = "claimed"
    CLOSED = "closed"
    ALL = (OPEN, CLAIMED, CLOSED)


class HandoffRecord(Base):
    """A turn handed to a person: one open record per session and reason, the most urgent priority kept."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_session_reason", "session_id", "reason"),
        Index("ix_handoffs_status_priority", "status", "priority"),
    )

    NOTE_CHARS: ClassVar[int] = 1000

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128), default=None)
    message_id: Mapped[str | None] = mapped_column(String(32), default=None)  # the user message that triggered it
    reason: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=HandoffStatus.OPEN)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(160), default=None)
    closed_by: Mapped[str | None] = mapped_column(String(160), default=None)
    note: Mapped[str | None] = mapped_column(String(1000), default=None)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the prefix lets people tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class AuditEntry(Base):
    """Who did what, when, from where, with what result: every operator and admin action."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(160))
    role: Mapped[str | None] = mapped_column(String(16), default=None)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(512), default=None)
    source: Mapped[str | None] = mapped_column(String(128), default=None)
    result: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Incident(Base):
    """One problem as people handle it: the alerts it groups, and everything that happened to it."""

    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(512))
    severity: Mapped[str] = mapped_column(String(8))  # the highest of its alerts, after escalation
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | acknowledged | resolved
    group_key: Mapped[str] = mapped_column(String(512), index=True)
    source: Mapped[str] = mapped_column(String(32))  # embedded | alertmanager
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(160), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class IncidentAlert(Base):
    """An alert instance (one label set, one firing episode) inside an incident."""

    __tablename__ = "incident_alerts"
    __table_args__ = (UniqueConstraint("fingerprint", "starts_at", name="uq_incident_alert_episode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(1024))
    alertname: Mapped[str] = mapped_column(String(160), index=True)
    severity: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16))  # firing | resolved
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class IncidentEvent(Base):
    """The incident's timeline: state changes, notifications, acknowledgements, notes, later diagnosis."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(160), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Silence(Base):
    """Mute the notifications of matching alerts between two times (Alertmanager's silences)."""

    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    matchers: Mapped[list[Any]] = mapped_column(JSON)  # [{"name", "op", "value"}]
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_by: Mapped[str] = mapped_column(String(160))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Delivery(Base):
    """One notification sent (or not) to one channel: the delivery log."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    channel: Mapped[str] = mapped_column(String(64), index=True)
    incident_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    group_key: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved (what was announced)
    outcome: Mapped[str] = mapped_column(String(16))  # sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    alerts: Mapped[int] = mapped_column(Integer, default=0)
