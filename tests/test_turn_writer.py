"""Group commit: concurrent turns share one transaction, each call returns once its turn is durable.

Every test runs on SQLite and on a real PostgreSQL. Batches are made deterministic by holding the
writer's first commit until the other turns are queued (``GatedStore``): the database work is real.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.chat.sessions import SessionStore, StoredMessage, TurnRecord
from ragvigil.chat.turn_writer import TurnWriter
from ragvigil.storage.db import Database, migrate
from ragvigil.storage.models import Message
from tests.conftest import make_settings
from tests.realservers import create_database, wait_until

_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rv.db'}"
    return create_database(request.getfixturevalue("pg_server"), f"rv_tw_{os.getpid()}_{next(_counter)}")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate(database.engine)
    yield database
    database.dispose()


class GatedStore(SessionStore):
    """The real store; its first batch waits for ``release`` (``held``: ``entered`` is set while it waits)."""

    def __init__(self, db: Database, held: bool = True) -> None:
        super().__init__(db)
        self.held = held
        self.calls: list[int] = []  # the size of every append_many, in order
        self.entered = threading.Event()
        self.release = threading.Event()

    def append_many(self, turns: Any) -> list[str]:
        if self.held and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(120), "the test never released the first batch"
        self.calls.append(len(turns))
        return super().append_many(turns)


def _turn(session: str, i: int) -> list[StoredMessage]:
    at = datetime.now(UTC) + timedelta(milliseconds=i)
    return [
        StoredMessage(f"{session}-u{i}", "user", f"question {i}", at),
        StoredMessage(f"{session}-a{i}", "assistant", f"answer {i}", at),
    ]


def _writer(db: Database, batch_max: int = 64, linger_s: float = 0.0) -> tuple[TurnWriter, GatedStore]:
    store = GatedStore(db)
    return TurnWriter(store, batch_max=batch_max, linger_s=linger_s), store


def _in_threads(calls: list[Any], writer: TurnWriter | None = None, store: GatedStore | None = None) -> list[Any]:
    """Run each call on its own thread; their results (or the exception raised) in order.

    With ``store``: the first call's batch is held until all the others are queued behind it, so
    it commits alone and the rest are one batch (or as many as ``batch_max`` makes).
    """
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = calls[i]()
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    threads[0].start()
    if store is not None:
        assert writer is not None and store.entered.wait(120)
    for t in threads[1:]:
        t.start()
    if store is not None:
        wait_until(lambda: writer._queue.qsize() >= len(calls) - 1, 120, "turns queued")  # type: ignore[union-attr]
        store.release.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out


def test_concurrent_turns_share_one_transaction_and_each_is_durable_when_its_call_returns(db: Database) -> None:
    writer, store = _writer(db)
    durable: list[bool] = []

    def one(i: int) -> str:
        sid = writer.append(f"s{i}", "default", None, _turn(f"s{i}", i), owner="anonymous")
        with db.session() as s:  # another connection sees the turn the moment the call returned
            durable.append(s.get(Message, f"s{i}-a{i}") is not None)
        return sid

    try:
        results = _in_threads([lambda i=i: one(i) for i in range(8)], writer, store)
    finally:
        writer.close()
    assert results == [f"s{i}" for i in range(8)]
    assert durable == [True] * 8
    assert store.calls == [1, 7]  # the first turn alone (nobody waited yet), then the seven queued behind it
    assert (writer.batches, writer.turns) == (2, 8)


def test_two_turns_of_one_session_in_one_batch_keep_their_order(db: Database) -> None:
    writer, store = _writer(db)
    SessionStore(db).append("same", "default", None, _turn("same", 0), owner="anonymous")
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: writer.append("other", "default", None, _turn("other", 0), owner="x"))]
    threads[0].start()
    try:
        assert store.entered.wait(30)  # the first batch is held: what follows queues behind it, in this order
        for i in (1, 2, 3):
            t = threading.Thread(
                target=lambda i=i: results.append(
                    writer.append("same", "default", None, _turn("same", i), owner="anonymous")
                )
            )
            threads.append(t)
            t.start()
            wait_until(lambda i=i: writer._queue.qsize() >= i, 30, f"turn {i} queued")
        store.release.set()
        for t in threads:
            t.join(30)
    finally:
        writer.close()
    assert results == ["same"] * 3
    assert store.calls == [1, 3]  # the three turns of "same" went in one transaction
    with db.session() as s:
        rows = s.execute(
            select(Message.id, Message.seq).where(Message.session_id == "same").order_by(Message.seq)
        ).all()
    assert [r.id for r in rows] == [f"same-{k}{i}" for i in range(4) for k in ("u", "a")]
    assert [r.seq for r in rows] == list(range(1, 9))


def test_a_record_the_database_refuses_fails_only_its_own_turn(db: Database) -> None:
    writer, store = _writer(db)
    bad = _turn("b2", 2)
    bad[1].content = None  # type: ignore[assignment]  # NOT NULL: SQLite and PostgreSQL both refuse the record
    turns = [_turn("b0", 0), _turn("b1", 1), bad, _turn("b3", 3)]
    try:
        results = _in_threads(
            [lambda i=i: writer.append(f"b{i}", "default", None, turns[i], owner="anonymous") for i in range(4)],
            writer,
            store,
        )
    finally:
        writer.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError)
    assert isinstance(results[2], BaseException)
    assert [results[i] for i in (0, 1, 3)] == ["b0", "b1", "b3"]
    assert store.calls[:2] == [1, 3]  # the first alone, then the batch holding the bad record ...
    assert sorted(store.calls[2:]) == [1, 1, 1]  # ... refused, and written again one turn at a time
    with db.session() as s:
        stored = set(s.scalars(select(Message.session_id)))
    assert stored == {"b0", "b1", "b3"}


def test_an_outage_journals_every_turn_of_the_batch_and_tries_the_database_once(db_url: str, tmp_path: Path) -> None:
    """A database outage (the ``database`` fault: the driver's own OperationalError) during a batch of turns."""
    rt = Runtime(make_settings(tmp_path / "data", database_url=db_url, faults={"enabled": True}))
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", b"# FAQ\nShipping takes three days.")
        rt.pipeline.run(Turn(message="How long does shipping take?", kb="default"))  # warm: engines loaded
        store = GatedStore(rt.db)
        rt.turn_writer.sessions = store
        rt.faults.inject("database", "error", 120, by="test")
        turns = [Turn(message="How long does shipping take?", kb="default") for _ in range(4)]
        results = _in_threads([lambda t=t: rt.pipeline.run(t) for t in turns], rt.turn_writer, store)
        assert not any(isinstance(r, BaseException) for r in results), results
        assert store.calls == [1, 3]  # the batch failed once, as a whole: no turn-by-turn retry against an outage
        assert [t.persisted_to for t in turns] == ["journal"] * 4
        assert all(any("journaled" in r for r in t.degraded_reasons) for t in turns)
        assert len(rt.journal.pending()) == 4
        rt.faults.clear_all()
        assert rt.replay_journal() == 4
        for t in turns:
            assert [m.id for m in rt.sessions.messages(t.session_id)] == [t.user_message_id, t.message_id]
    finally:
        rt.close()


def test_a_lone_turn_is_not_held_for_the_linger(db: Database) -> None:
    """With a long linger, a turn alone in the queue is committed without waiting for company."""
    waits: list[float | None] = []

    class Spy(queue.SimpleQueue):  # type: ignore[type-arg]
        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            if timeout is not None:
                waits.append(timeout)
            return super().get(block, timeout)

    writer = TurnWriter(SessionStore(db), batch_max=64, linger_s=30.0)
    writer._queue = Spy()
    try:
        for i in range(3):
            assert writer.append(f"l{i}", "default", None, _turn(f"l{i}", i), owner="anonymous") == f"l{i}"
    finally:
        writer.close()
    assert waits == []  # never lingered: each turn was alone
    assert (writer.batches, writer.turns) == (3, 3)


def test_records_are_bounded_by_batch_max(db: Database) -> None:
    writer, store = _writer(db, batch_max=4)
    try:
        results = _in_threads(
            [
                lambda i=i: writer.append(f"m{i}", "default", None, _turn(f"m{i}", i), owner="anonymous")
                for i in range(10)
            ],
            writer,
            store,
        )
    finally:
        writer.close()
    assert results == [f"m{i}" for i in range(10)]
    assert store.calls == [1, 4, 4, 1]


def test_a_writer_closed_writes_directly(db: Database) -> None:
    writer = TurnWriter(SessionStore(db), batch_max=64)
    writer.close()
    assert writer.append("c", "default", None, _turn("c", 0), owner="anonymous") == "c"
    assert writer.batches == 0
    with db.session() as s:
        assert s.get(Message, "c-a0") is not None


def test_turn_record_is_what_append_many_takes(db: Database) -> None:
    ids = SessionStore(db).append_many(
        [
            TurnRecord("r1", "default", None, _turn("r1", 0), "anonymous"),
            TurnRecord("r2", "default", "u", _turn("r2", 1), "k"),
        ]
    )
    assert ids == ["r1", "r2"]


def test_one_batch_keeps_every_rule_of_a_single_append(db: Database) -> None:
    """New, existing, replayed and someone else's session in one batch: as if appended one at a time."""
    store = SessionStore(db)
    store.append_many([TurnRecord("old", "default", None, _turn("old", 0), "anonymous")])
    store.append_many([TurnRecord("theirs", "default", "u1", _turn("theirs", 0), "anonymous")])
    replayed = TurnRecord("old", "default", None, _turn("old", 0), "anonymous")
    ids = store.append_many(
        [
            TurnRecord("new", "default", None, _turn("new", 1), "anonymous"),
            TurnRecord("old", "default", None, _turn("old", 2), "anonymous"),
            replayed,
            TurnRecord("theirs", "default", "u2", _turn("moved", 3), "anonymous"),  # another user's session id
            TurnRecord("old", "default", None, _turn("old", 4), "anonymous"),
        ]
    )
    assert ids[:3] == ["new", "old", "old"] and ids[4] == "old"
    assert ids[3] not in ("theirs", "new", "old")  # moved to a session of its own sender
    with db.session() as s:
        rows = s.execute(select(Message.session_id, Message.seq, Message.id).order_by(Message.session_id, Message.seq))
        by_session: dict[str, list[tuple[int, str]]] = {}
        for sid, seq, mid in rows:
            by_session.setdefault(sid, []).append((seq, mid))
    assert [m for _, m in by_session["old"]] == ["old-u0", "old-a0", "old-u2", "old-a2", "old-u4", "old-a4"]
    assert [seq for seq, _ in by_session["old"]] == [1, 2, 3, 4, 5, 6]
    assert by_session["new"] == [(1, "new-u1"), (2, "new-a1")]
    assert by_session[ids[3]] == [(1, "moved-u3"), (2, "moved-a3")]
    assert store.owner(ids[3]).user_id == "u2" and store.owner("theirs").user_id == "u1"


def test_a_batch_costs_the_same_statements_whatever_its_size(db: Database) -> None:
    """The rows of a batch go in with one statement per table, not one flush per turn."""
    from sqlalchemy import event

    store = SessionStore(db)
    statements: list[str] = []

    def count(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement.split()[0].upper())

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        sizes = {}
        for n in (1, 8, 32):
            statements.clear()
            store.append_many([TurnRecord(f"b{n}-{i}", "default", None, _turn(f"b{n}-{i}", i), "k") for i in range(n)])
            sizes[n] = sum(1 for s in statements if s in ("SELECT", "INSERT", "UPDATE"))
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert sizes[1] == sizes[8] == sizes[32] <= 4, sizes
