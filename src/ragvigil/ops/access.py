"""API keys with roles, and the audit trail of operator and admin actions.

Keys are random (``rv_`` + 32 url-safe bytes), so a plain SHA-256 is a sound way to store
them: there is nothing to brute-force. Roles are ordered; a route names the least role it
needs: client (chat) < viewer (read ops data) < operator (act on alerts, modes, documents)
< admin (keys, config, destructive operations).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.storage.db import Database
from ragvigil.storage.errors import is_outage
from ragvigil.storage.models import ApiKey, AuditEntry, utcnow

log = logging.getLogger(__name__)


class Role(IntEnum):
    client = 1
    viewer = 2
    operator = 3
    admin = 4


class KeyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and role, or the anonymous caller of an open route."""

    name: str
    role: Role
    key_id: str | None = None


# A keyless loopback caller of an open route in development. Client role: the open routes that need
# more (knowledge-base listing and uploads) admit it by name, so it never passes an operator check.
ANONYMOUS = Principal("anonymous", Role.client)
ANONYMOUS_DEV = ANONYMOUS  # the former name


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: callers on this machine only. Anything else is not."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Keys in the database, and the keys this process verified lately.

    A key checked against the database in the last ``outage_grace_s`` is still accepted while the
    database is unreachable: otherwise every keyed caller gets a 503 during an outage, although the
    journal could keep their turns. A key unknown to this process, or revoked here, is never let in
    that way; a revocation made elsewhere reaches this process once the database answers again.
    """

    MAX_KNOWN = 10_000  # keys remembered; the least recently verified goes first

    def __init__(self, db: Database, outage_grace_s: float = 900.0) -> None:
        self.db = db
        self.outage_grace_s = outage_grace_s
        self._known: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, name: str, role: Role) -> tuple[ApiKey, str]:
        """A new key; the plain key is returned once and never stored."""
        plain = "rv_" + secrets.token_urlsafe(32)
        row = ApiKey(name=name, prefix=plain[:10], key_hash=_hash(plain), role=role.name)
        with self.db.session(write=True) as s:
            s.add(row)
        return row, plain

    def list(self) -> list[ApiKey]:
        with self.db.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def revoke(self, key_id_or_prefix: str) -> ApiKey:
        with self.db.session(write=True) as s:
            row = s.scalar(select(ApiKey).where((ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix)))
            if row is None:
                raise KeyNotFound(key_id_or_prefix)
            row.revoked_at = row.revoked_at or utcnow()
            self._forget(row.key_hash)
            return row

    def authenticate(self, plain: str) -> Principal | None:
        digest = _hash(plain)
        try:
            with self.db.session(write=True) as s:
                row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))
                if row is None:
                    self._forget(digest)
                    return None
                s.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=utcnow()))
                who = Principal(row.name, Role[row.role], row.id)
        except SQLAlchemyError as exc:
            known = self._known_lately(digest) if is_outage(exc) else None
            if known is None:
                raise
            log.warning("api_key_accepted_during_database_outage", extra={"key": known.name})
            return known
        with self._lock:
            self._known[digest] = (who, time.monotonic())
            self._known.move_to_end(digest)
            while len(self._known) > self.MAX_KNOWN:
                self._known.popitem(last=False)
        return who

    def _known_lately(self, digest: str) -> Principal | None:
        with self._lock:
            entry = self._known.get(digest)
        if entry is None or time.monotonic() - entry[1] > self.outage_grace_s:
            return None
        return entry[0]

    def _forget(self, digest: str) -> None:
        with self._lock:
            self._known.pop(digest, None)

    def has_active_admin(self) -> bool:
        with self.db.session() as s:
            return (
                s.scalar(select(ApiKey.id).where(ApiKey.role == Role.admin.name, ApiKey.revoked_at.is_(None)).limit(1))
                is not None
            )


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        actor: Principal | str,
        action: str,
        result: str,
        target: str | None = None,
        source: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        name, role = (actor.name, actor.role.name) if isinstance(actor, Principal) else (actor, None)
        with self.db.session(write=True) as s:
            s.add(
                AuditEntry(
                    actor=name,
                    role=role,
                    action=action,
                    target=target,
                    source=source,
                    result=result,
                    detail=detail or {},
                )
            )

    def query(
        self, action: str | None = None, actor: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        if actor:
            stmt = stmt.where(AuditEntry.actor == actor)
        if since:
            stmt = stmt.where(AuditEntry.at >= since)
        with self.db.session() as s:
            return list(s.scalars(stmt))
