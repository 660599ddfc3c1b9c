"""Where injected faults act: thin wrappers around a generator, the vector store, the embedders
(the query engines and the vector filler's) and the safety check, and SQLAlchemy engine events for the database.

This is the one fault mechanism: the fault API, the drills and the degraded-mode tests all inject
through ``FaultRegistry`` and these seams; the components themselves carry no fault hook.

Why wrappers at these seams: each raises exactly what a real failure of the component raises
(``ProviderUnavailable``, ``VectorStoreError``, the DBAPI's ``OperationalError``), so the code
under test handles an injected fault through the same path as an outage, and nothing in the
components knows about drills. The only imports from ``providers`` and ``knowledge`` are their
error types, and from ``chat.understanding`` the verdict a switched-off filter gives (``SAFE``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sqlalchemy import Engine, event

from ragvigil.chat.understanding import SAFE, SafetyVerdict
from ragvigil.knowledge.embeddings import EmbedderBusy, EmbedderUnavailable
from ragvigil.knowledge.vectorstore import VectorStoreError
from ragvigil.ops.faults.registry import Fault, FaultRegistry
from ragvigil.providers.base import Generation, GenerationRequest, Generator, ProviderTimeout, ProviderUnavailable

WHAT = {
    "error": "failing (injected fault)",
    "refuse": "connection refused (injected fault)",
    "malformed": "malformed response (injected fault)",
    "timeout": "timed out (injected fault)",
}


class EmbeddingUnavailable(EmbedderUnavailable):
    """The embedder failed: the engine's own outage error, so BM25 answers alone and, in a row,
    retrieval trips to lexical_only (a timeout is ``EmbedderBusy``: a queue, which trips nothing)."""


def strike(
    fault: Fault | None,
    fail: Callable[[str], BaseException],
    timeout: Callable[[str], BaseException] | None = None,
    limit_s: float | None = None,
) -> None:
    """Apply ``fault`` to one call: sleep (slow, timeout), then raise (anything but slow).

    A timeout waits ``delay_s``, or the caller's own time limit ``limit_s`` when that is shorter,
    the way a real timeout ends at the caller's deadline.
    """
    if fault is None:
        return
    if fault.kind in ("slow", "timeout"):
        delay = fault.delay_s if limit_s is None else max(0.0, min(fault.delay_s, limit_s))
        fault.wait(delay)
        if fault.kind == "slow":
            return
        raise (timeout or fail)(f"{WHAT['timeout']} after {delay:g}s [fault {fault.id}]")
    raise fail(f"{WHAT.get(fault.kind, 'failing')} [fault {fault.id}]")


class FaultyGenerator:
    """Any ``Generator`` with ``provider:<its name>`` faults applied to generate, stream and check."""

    def __init__(self, inner: Generator, faults: FaultRegistry) -> None:
        self.inner = inner
        self.name = inner.name
        self.target = f"provider:{inner.name}"
        self.faults = faults
        faults.providers.add(inner.name)

    def __getattr__(self, name: str) -> Any:  # model, close, ... of the wrapped generator
        return getattr(self.inner, name)

    def _strike(self, request: GenerationRequest | None) -> None:
        strike(
            self.faults.hit(self.target),
            lambda m: ProviderUnavailable(f"{self.name}: {m}"),
            lambda m: ProviderTimeout(f"{self.name}: {m}"),
            request.timeout_s if request is not None else None,
        )

    def generate(self, request: GenerationRequest) -> Generation:
        self._strike(request)
        return self.inner.generate(request)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        self._strike(request)
        yield from self.inner.stream(request)

    def check(self) -> None:
        fault = self.faults.hit(self.target)
        if fault is not None and fault.kind != "slow":
            raise ProviderUnavailable(f"{self.name}: {WHAT[fault.kind]} [fault {fault.id}]")
        self.inner.check()


class FaultyVectorStore:
    """A vector store whose search, upsert, delete, flush and check fail under a ``vector_store`` fault."""

    def __init__(self, inner: Any, faults: FaultRegistry) -> None:
        self.inner = inner
        self.faults = faults

    def __getattr__(self, name: str) -> Any:  # dim, ids, count, flush, ... of the wrapped store
        return getattr(self.inner, name)

    def _strike(self) -> None:
        strike(self.faults.hit("vector_store"), lambda m: VectorStoreError(f"vector store {m}"))

    def search(self, kb: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        self._strike()
        return self.inner.search(kb, vector, k)

    def upsert(self, kb: str, ids: Any, vectors: np.ndarray) -> None:
        self._strike()
        self.inner.upsert(kb, ids, vectors)

    def delete(self, kb: str, ids: Any) -> None:
        self._strike()
        self.inner.delete(kb, ids)

    def flush(self) -> None:
        self._strike()
        self.inner.flush()

    def check(self) -> None:
        fault = self.faults.hit("vector_store")
        if fault is not None and fault.kind != "slow":
            raise VectorStoreError(f"vector store {WHAT[fault.kind]} [fault {fault.id}]")
        self.inner.check()


class FaultyEmbedder:
    """A query embedder that fails (or is slow) under an ``embedding`` fault; placed below the query
    cache, as a real engine failure is: questions already cached are still answered with vectors."""

    def __init__(self, inner: Any, faults: FaultRegistry) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.name = inner.name
        self.faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _strike(self, limit_s: float | None = None) -> None:
        strike(
            self.faults.hit("embedding"),
            lambda m: EmbeddingUnavailable(f"embedding {m}"),
            lambda m: EmbedderBusy(f"embedding {m}"),
            limit_s=limit_s,
        )

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        self._strike(timeout_s)
        return self.inner.embed_query(text, timeout_s)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self._strike()
        return self.inner.embed_passages(texts)

    def check(self, timeout_s: float = 3.0) -> None:
        fault = self.faults.hit("embedding")
        if fault is not None and fault.kind != "slow":
            raise EmbeddingUnavailable(f"embedding {WHAT[fault.kind]} [fault {fault.id}]")
        self.inner.check(timeout_s)


class SafetyCheckFailed(RuntimeError):
    """The safety check raised (a lexicon or model that failed to load, a bug): what ``error`` raises."""


class FaultySafetyCheck:
    """A ``SafetyCheck`` under the ``safety`` fault: ``off`` answers every check SAFE without calling the
    real one (the filter silently passing everything, the failure the canary exists for), ``error`` raises.

    Responses (``response``/``replacement``) are untouched: what is broken is the judgement, not the texts.
    """

    def __init__(self, inner: Any, faults: FaultRegistry) -> None:
        self.inner = inner
        self.faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _judged(self) -> bool:
        """False when an ``off`` fault skips the judgement; raises under ``error``."""
        fault = self.faults.hit("safety")
        if fault is None:
            return True
        if fault.kind == "error":
            raise SafetyCheckFailed(f"safety check {WHAT['error']} [fault {fault.id}]")
        return False

    def check(self, text: str, vector: np.ndarray | None = None) -> SafetyVerdict:
        return self.inner.check(text, vector) if self._judged() else SAFE

    def check_output(self, text: str) -> SafetyVerdict:
        return self.inner.check_output(text) if self._judged() else SAFE


def attach_database(engine: Engine, faults: FaultRegistry) -> None:
    """Make a ``database`` fault fail connecting and executing with the driver's own OperationalError.

    Raised inside SQLAlchemy's DBAPI call (dialect events ``do_connect``/``do_execute*``), so it
    arrives as ``sqlalchemy.exc.OperationalError``, exactly as a server that went away does.
    """
    dbapi_error = engine.dialect.loaded_dbapi.OperationalError

    def check(*_: Any) -> None:  # returns None: SQLAlchemy goes on with the real call
        strike(faults.hit("database"), lambda m: dbapi_error(f"database {m}"))

    for name in ("do_connect", "do_execute", "do_execute_no_params", "do_executemany"):
        event.listen(engine, name, check)
