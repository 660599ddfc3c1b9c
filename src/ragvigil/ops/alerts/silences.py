"""Label matchers and silences, with Alertmanager's meaning.

A matcher is ``name op value`` with ``=``, ``!=``, ``=~``, ``!~``; regular expressions are anchored
(``severity=~"P1|P2"`` matches exactly P1 or P2), and a missing label reads as the empty string.
A silence mutes the notifications of every alert all of its matchers match, between its start and
end; the alert still fires and is still recorded in its incident.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from ragvigil.storage.db import Database
from ragvigil.storage.models import Silence, utcnow

_OPS = ("=~", "!~", "!=", "=")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TEXT = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')
MAX_SILENCE = timedelta(days=3660)
"""The longest a silence may last and the furthest ahead it may end: about ten years is "for good"
in practice, and the bound keeps date arithmetic and every database's datetime range out of overflow."""


class SilenceWindowError(ValueError):
    """A silence's start, end or duration is unusable; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def silence_window(
    starts_at: datetime | None, ends_at: datetime | None, duration_s: float | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The (start, end) of a new silence, timezone-aware, from an end time or a duration.

    Rejects, with the field at fault, an end not after the start and any window reaching past
    ``MAX_SILENCE`` from now, before any arithmetic could overflow.
    """
    now = now or datetime.now(UTC)
    limit = now + MAX_SILENCE
    starts = _aware(starts_at) if starts_at is not None else now
    if starts >= limit:
        raise SilenceWindowError("starts_at", f"starts_at must be before {limit:%Y-%m-%d} (at most ten years ahead)")
    if ends_at is not None:
        ends = _aware(ends_at)
        field = "ends_at"
    elif duration_s is not None:
        if duration_s > MAX_SILENCE.total_seconds():
            raise SilenceWindowError("duration", f"duration must be at most {MAX_SILENCE.days}d")
        ends = starts + timedelta(seconds=duration_s)  # both below the limit: no overflow
        field = "duration"
    else:
        raise SilenceWindowError("ends_at", "give ends_at or duration")
    if ends <= starts:
        raise SilenceWindowError(field, "ends_at must be after starts_at")
    if ends > limit:
        raise SilenceWindowError(field, f"a silence must end before {limit:%Y-%m-%d} (at most ten years ahead)")
    return starts, ends


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if not _LABEL.fullmatch(self.name):
            raise ValueError(f"matcher label name {self.name!r} is not a valid label name")
        if self.op not in _OPS:
            raise ValueError(f"matcher operator {self.op!r} is not one of =, !=, =~, !~")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"matcher {self.name}{self.op}{self.value!r}: bad regular expression: {exc}") from None

    def matches(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        hit = re.fullmatch(self.value, have) is not None
        return hit if self.op == "=~" else not hit

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(raw: Any) -> Matcher:
    """``{"name", "op", "value"}`` or the text form ``severity="P1"``; ValueError says what is wrong."""
    if isinstance(raw, str):
        m = _TEXT.fullmatch(raw)
        if not m:
            raise ValueError(f'matcher {raw!r} is not of the form name="value" (operators =, !=, =~, !~)')
        return Matcher(*m.groups())
    if isinstance(raw, dict):
        unknown = set(raw) - {"name", "op", "value", "isRegex", "isEqual"}
        if unknown:
            raise ValueError(f"matcher has unknown field(s) {sorted(unknown)}")
        if "op" not in raw and "isRegex" in raw:  # Alertmanager's API form
            regex, equal = bool(raw.get("isRegex")), raw.get("isEqual", True)
            op = ("=~" if regex else "=") if equal else ("!~" if regex else "!=")
        else:
            op = raw.get("op", "=")
        if not isinstance(raw.get("name"), str) or not isinstance(raw.get("value"), str):
            raise ValueError("matcher needs a string name and value")
        return Matcher(raw["name"], op, raw["value"])
    raise ValueError(f"matcher {raw!r} must be an object or a string")


def matches_all(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


class SilenceStore:
    """Silences in the database; the active ones are cached for a few seconds for the router."""

    def __init__(self, db: Database, cache_s: float = 2.0) -> None:
        self.db = db
        self.cache_s = cache_s
        self._cache: tuple[float, list[tuple[dict[str, Any], list[Matcher]]]] | None = None
        self._lock = threading.Lock()

    def create(
        self, matchers: list[Matcher], starts_at: datetime, ends_at: datetime, created_by: str, comment: str
    ) -> dict[str, Any]:
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise ValueError("ends_at must be after starts_at")
        with self.db.session(write=True) as s:
            row = Silence(
                matchers=[m.as_dict() for m in matchers],
                starts_at=starts_at,
                ends_at=ends_at,
                created_by=created_by,
                comment=comment,
            )
            s.add(row)
            s.flush()
            out = _silence_dict(row)
        self._cache = None
        return out

    def expire(self, silence_id: str) -> dict[str, Any] | None:
        with self.db.session(write=True) as s:
            row = s.get(Silence, silence_id)
            if row is None:
                return None
            if row.expired_at is None:
                row.expired_at = utcnow()
            s.flush()
            out = _silence_dict(row)
        self._cache = None
        return out

    def list(self, include_expired: bool = False) -> list[dict[str, Any]]:
        now = utcnow()
        with self.db.session() as s:
            rows = s.scalars(select(Silence).order_by(Silence.created_at.desc())).all()
            out = [_silence_dict(r, now) for r in rows]
        return out if include_expired else [x for x in out if x["state"] != "expired"]

    def active(self, now: datetime | None = None) -> list[tuple[str, list[Matcher]]]:
        """Silences in force at ``now`` (default: now). The rows are cached ``cache_s`` seconds."""
        now = now or utcnow()
        with self._lock:
            if self._cache is None or time.monotonic() - self._cache[0] >= self.cache_s:
                with self.db.session() as s:
                    rows = s.scalars(select(Silence).where(Silence.expired_at.is_(None))).all()
                    parsed = [(_silence_dict(r), [parse_matcher(m) for m in r.matchers]) for r in rows]
                self._cache = (time.monotonic(), parsed)
            rows_now = self._cache[1]
        return [(x["id"], matchers) for x, matchers in rows_now if x["starts_at"] <= now < x["ends_at"]]

    def silenced_by(self, labels: dict[str, str], now: datetime | None = None) -> str | None:
        for silence_id, matchers in self.active(now):
            if matches_all(matchers, labels):
                return silence_id
        return None


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _silence_dict(row: Silence, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    starts, ends = _aware(row.starts_at), _aware(row.ends_at)
    expired = _aware(row.expired_at) if row.expired_at else None
    state = "expired" if expired is not None or ends <= now else ("pending" if starts > now else "active")
    return {
        "id": row.id,
        "matchers": row.matchers,
        "starts_at": starts,
        "ends_at": ends,
        "created_by": row.created_by,
        "comment": row.comment,
        "created_at": _aware(row.created_at),
        "expired_at": expired,
        "state": state,
    }
