"""One writer thread that commits the turns of concurrent requests together (group commit).

One transaction per turn made concurrent turns queue for SQLite's single writer, each paying a
commit of its own. Here a turn's call hands its rows to the writer and blocks until the batch
holding them committed, so the 2xx is still sent only once the turn is durable. A batch takes
what is queued (at most ``batch_max`` turns); only when others are already waiting does it linger
``linger_s`` for more, so a lone turn is never delayed. A batch the database refuses is written
again one turn at a time, so one bad record fails only its own turn; an outage fails every turn of
the batch at once (the caller journals each, as before). The queue needs no bound of its own: every
entry is a caller blocked on it, so it never holds more than the request threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from ragvigil.chat.sessions import SessionStore, StoredMessage, TurnRecord
from ragvigil.storage.errors import describe, is_outage

log = logging.getLogger(__name__)

__all__ = ["TurnWriter"]

ALIVE_CHECK_S = 1.0  # how often a waiting caller checks that the writer is still there


@dataclass(eq=False)
class _Pending:
    record: TurnRecord
    done: threading.Event = field(default_factory=threading.Event)
    session_id: str | None = None
    error: BaseException | None = None

    def settle(self, session_id: str | None = None, error: BaseException | None = None) -> None:
        self.session_id, self.error = session_id, error
        self.done.set()


class TurnWriter:
    """``append`` as ``SessionStore.append``, but concurrent calls share one transaction."""

    def __init__(self, sessions: SessionStore, batch_max: int = 64, linger_s: float = 0.002) -> None:
        self.sessions = sessions
        self.batch_max = batch_max
        self.linger_s = linger_s
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # committed batches and the turns in them (for tests and the bench)
        self.turns = 0

    def append(
        self, session_id: str, kb: str, user_id: str | None, messages: list[StoredMessage], *, owner: str
    ) -> str:
        """Store one turn's messages; returns once they are committed (raises what the database raised)."""
        record = TurnRecord(session_id, kb, user_id, messages, owner)
        if self.batch_max <= 1 or not self._ensure_started():
            return self.sessions.append_many([record])[0]
        pending = _Pending(record)
        self._queue.put(pending)
        while not pending.done.wait(ALIVE_CHECK_S):
            thread = self._thread
            gone = thread is None or not thread.is_alive()
            if gone and not pending.done.is_set():  # the writer is gone: write it here (append is idempotent)
                return self.sessions.append_many([record])[0]
        if pending.error is not None:
            raise pending.error
        assert pending.session_id is not None
        return pending.session_id

    def close(self) -> None:
        """Commit what is queued and stop the thread; later calls write directly."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _ensure_started(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="turn-writer", daemon=True)
                self._thread.start()
            return True

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = self._fill(batch)
            try:
                self._commit(batch)
            except BaseException as exc:  # never leave a caller waiting, whatever went wrong
                for p in batch:
                    if not p.done.is_set():
                        p.settle(error=exc)
        self._drain()

    def _fill(self, batch: list[_Pending]) -> bool:
        """Add what is queued; linger for more only while others wait. True when told to stop."""
        deadline = None
        while len(batch) < self.batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if len(batch) < 2 or self.linger_s <= 0:
                    return False
                deadline = deadline or time.monotonic() + self.linger_s
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            ids = self.sessions.append_many([p.record for p in batch])
        except Exception as exc:
            if len(batch) == 1 or is_outage(exc):
                for p in batch:
                    p.settle(error=exc)
                return
            log.warning("turn_batch_refused", extra={"turns": len(batch), "error": describe(exc)})
            for p in batch:  # one at a time: only the turn at fault hears of it
                try:
                    p.settle(self.sessions.append_many([p.record])[0])
                except Exception as one:
                    p.settle(error=one)
            return
        self.batches += 1
        self.turns += len(batch)
        for p, session_id in zip(batch, ids, strict=True):
            p.settle(session_id)

    def _drain(self) -> None:
        """Write, one batch at a time, whatever was queued behind the stop."""
        while True:
            batch: list[_Pending] = []
            while len(batch) < self.batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    batch.append(item)
            if not batch:
                return
            self._commit(batch)
