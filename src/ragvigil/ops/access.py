"""API keys with roles, and the audit trail of operator and admin actions.

Keys are random (``rv_`` + 32 url-safe bytes), so a plain SHA-256 is a sound way to store
them: there is nothing to brute-force. Roles are ordered; a route names the least role it
needs: client (chat) < viewer (read ops data) < operator (act on alerts, modes, documents)
< admin (keys, config, destructive operations).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import select, update

from ragvigil.storage.db import Database
from ragvigil.storage.models import ApiKey, AuditEntry, utcnow


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
    def __init__(self, db: Database) -> None:
        self.db = db

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
            return row

    def authenticate(self, plain: str) -> Principal | None:
        with self.db.session(write=True) as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(plain), ApiKey.revoked_at.is_(None)))
            if row is None:
                return None
            s.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=utcnow()))
            return Principal(row.name, Role[row.role], row.id)

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
