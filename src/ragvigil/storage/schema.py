"""Whether a database holds the schema this ragvigil was written for, asked without changing anything.

Why: a read-only command (``ask``, ``search``) pointed at the wrong or a fresh data dir should
say so and how to fix it, not quietly create an empty database and answer "could not find"; a
replica of the scaled mode must not serve against a schema its deploy step has not migrated yet
(it would fail on the first missing column), and no ragvigil may run on a schema *newer* than its
code (an older release cannot know what a newer migration changed). ``schema_state`` names the
missing or unknown revisions so the message says exactly what to run.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.storage.db import alembic_config, make_engine

MIGRATE_COMMAND = "ragvigil migrate"


@dataclass(frozen=True)
class Revision:
    """One migration this code knows: its id and the first line of its docstring."""

    id: str
    title: str

    def __str__(self) -> str:
        return f"{self.id} ({self.title})" if self.title else self.id


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against this code's migrations.

    ``current`` is None for a database without a ragvigil schema; ``missing`` are the revisions
    still to apply, oldest first; ``unknown`` is set when the database is at a revision this code
    does not have (written by a newer ragvigil).
    """

    current: str | None
    head: str
    missing: tuple[Revision, ...] = field(default=())
    unknown: str | None = None

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def newer(self) -> bool:
        return self.unknown is not None

    @property
    def behind(self) -> bool:
        return not self.at_head and not self.newer

    def describe(self) -> str:
        """One line for an operator: what is wrong and the command that fixes it ("" at head)."""
        if self.newer:
            return (
                f"the database is at revision {self.unknown}, which this ragvigil does not know (its newest is "
                f"{self.head}): the database is newer than this ragvigil: upgrade ragvigil"
            )
        if self.at_head:
            return ""
        missing = ", ".join(str(r) for r in self.missing)
        where = "has no ragvigil schema yet" if self.current is None else f"is at revision {self.current}"
        return f"the database {where}; missing migration(s) {missing}: run `{MIGRATE_COMMAND}`"

    def to_dict(self) -> dict[str, object]:
        state = "newer" if self.newer else "at_head" if self.at_head else "behind"
        return {
            "state": state,
            "current": self.current,
            "head": self.head,
            "missing": [r.id for r in self.missing],
            "unknown": self.unknown,
        }


class SchemaRefused(RuntimeError):
    """This process must not serve on the database's schema (behind without migrating, or newer)."""

    def __init__(self, state: SchemaState) -> None:
        super().__init__(state.describe())
        self.state = state


@lru_cache(maxsize=1)
def known_revisions() -> tuple[Revision, ...]:
    """This code's migrations, oldest first (the history is linear). Parsed once per process."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revisions = [
        Revision(s.revision, (s.doc or "").strip().splitlines()[0] if s.doc else "") for s in script.walk_revisions()
    ]
    return tuple(reversed(revisions))


def head_revision() -> str:
    return known_revisions()[-1].id


def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database (None: no ragvigil schema). Raises SQLAlchemyError when unreachable."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def state_of(current: str | None) -> SchemaState:
    """The state of a database whose recorded revision is ``current``."""
    revisions = known_revisions()
    ids = [r.id for r in revisions]
    head = ids[-1]
    if current is not None and current not in ids:
        return SchemaState(current, head, unknown=current)
    start = 0 if current is None else ids.index(current) + 1
    return SchemaState(current, head, missing=revisions[start:])


def engine_state(engine: Engine) -> SchemaState:
    """The schema state of an open engine's database. Raises SQLAlchemyError when it cannot be reached."""
    return state_of(current_revision(engine))


def schema_state(url: str) -> SchemaState | None:
    """The schema state of the database at ``url``; None when it is a SQLite file that does not exist.

    Raises SQLAlchemyError when the database cannot be reached.
    """
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    engine = make_engine(url)
    try:
        return engine_state(engine)
    finally:
        engine.dispose()


def schema_problem(url: str) -> str | None:
    """None when the database is at the newest revision, else what is wrong, in words.

    Raises SQLAlchemyError when the database cannot be reached.
    """
    state = schema_state(url)
    if state is None:
        return f"there is no database at {url.removeprefix('sqlite:///')}"
    if state.current is None:
        return "the database has no ragvigil schema yet"
    if state.newer:
        return state.describe()
    if state.behind:
        return f"the database schema is at revision {state.current}, the newest is {state.head}"
    return None


class SchemaWatch:
    """The schema state a running instance reports on readiness, re-read at most every ``ttl_s`` seconds.

    Why: after start another replica's deploy step may migrate the database past this code (a rolling
    update); readiness says so, so an operator sees which replicas still run old code on a newer schema.
    A read runs on its own thread and readiness waits for it at most ``wait_s``: a database that hangs
    never holds up the probe (the ``database`` check reports the outage), the last state is shown instead.
    """

    def __init__(self, engine: Engine, ttl_s: float = 10.0, wait_s: float = 1.0) -> None:
        self._engine, self._ttl_s, self._wait_s = engine, ttl_s, wait_s
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._reading: threading.Event | None = None
        self._last: dict[str, object] = {"state": "unknown", "error": "not read yet"}

    def report(self, wait_s: float | None = None) -> dict[str, object]:
        """``SchemaState.to_dict()`` plus ``message``; ``{"state": "unknown", "error"}`` when it cannot be read.
        Waits for a due read at most ``wait_s`` (default: the watch's)."""
        with self._lock:
            done = self._reading
            if done is None and time.monotonic() - self._read_at >= self._ttl_s:
                done = self._reading = threading.Event()
                threading.Thread(target=self._read, args=(done,), name="schema-watch", daemon=True).start()
        if done is not None:
            done.wait(self._wait_s if wait_s is None else wait_s)
        with self._lock:
            return self._last

    def _read(self, done: threading.Event) -> None:
        try:
            state = engine_state(self._engine)
            last: dict[str, object] = state.to_dict() | {"message": state.describe()}
        except Exception as exc:  # any failure is reported; an escaped one would stop every later read
            last = {"state": "unknown", "error": f"{type(exc).__name__}: {exc}"[:300]}
        with self._lock:
            self._last, self._read_at, self._reading = last, time.monotonic(), None
        done.set()


def start_refusal(url: str, *, migrate_on_start: bool) -> str | None:
    """Why an instance must not start on the database at ``url`` (``prepare_schema``'s rule), read without
    changing anything; None when it may (also when the database cannot be reached: the start reports that)."""
    try:
        state = schema_state(url)
    except SQLAlchemyError:
        return None
    if state is None:  # a SQLite file not made yet: created and migrated at start, or nothing to serve
        state = state_of(None)
    if state.newer or (state.behind and not migrate_on_start):
        return state.describe()
    return None


def prepare_schema(engine: Engine, *, migrate_on_start: bool) -> SchemaState:
    """The start-up rule: refuse a newer schema always; migrate, or refuse a schema that is behind.

    ``migrate_on_start`` true (the embedded default): missing migrations are applied here. False (the
    scaled mode, where two replicas must not race to migrate and ``ragvigil migrate`` is a deploy
    step): a schema that is behind raises ``SchemaRefused`` naming what is missing.
    """
    from ragvigil.storage.db import migrate

    state = engine_state(engine)
    if state.newer or (state.behind and not migrate_on_start):
        raise SchemaRefused(state)
    if state.behind:
        migrate(engine)
        state = engine_state(engine)
    return state


__all__ = [
    "Revision",
    "SchemaRefused",
    "SchemaState",
    "SchemaWatch",
    "current_revision",
    "engine_state",
    "head_revision",
    "known_revisions",
    "prepare_schema",
    "schema_problem",
    "schema_state",
    "start_refusal",
    "state_of",
]
