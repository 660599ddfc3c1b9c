"""A flood's 503s are answered by the protocol before the app's middleware, and only those.

A real uvicorn with ``ragvigil serve``'s protocol class (``http_protocol(early_refusal)``) in front of
the sample runtime. The admission gate is put in the saturated state directly (every slot taken,
ten waiters, turns measured at 5 s), so no timing decides what happens: a normal turn could not start
within the wait and is refused before the middleware (no request id: the request context never
ran), a crisis turn is never refused there, and with a free slot nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from ragvigil.api.admission import early_refusal
from ragvigil.api.http_protocols import http_protocol
from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops import metrics
from ragvigil.ops.admission import Priority
from tests.conftest import LiveServer

QUESTION = {"message": "How do I export my notes to PDF?"}
CRISIS = {"message": "I want to kill myself. How do I export my notes to PDF?"}


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@contextmanager
def saturated(rt: Runtime) -> Iterator[None]:
    """Every slot of the gate taken and ten normal requests waiting, at 5 s a turn: a newcomer would wait
    (10 + 1) × 5 s / 16 slots ≈ 3.4 s, past the queue's wait (1.2 s)."""
    gate = rt.admission.gate
    for _ in range(50):
        gate.limiter.sample(5.0, 1)
    waiters = [gate.queue.make(Priority.normal) for _ in range(10)]
    gate.queue.size = max(gate.queue.size, len(waiters))  # as sized for the latency before (the next ask resizes it)
    for w in waiters:
        assert gate.queue.push(w) is None
    gate.in_flight += gate.limit
    try:
        yield
    finally:
        gate.in_flight -= gate.limit
        for w in waiters:
            gate.queue.remove(w)


@pytest.fixture
def served(sample_runtime: Runtime) -> Iterator[tuple[str, Runtime]]:
    app = create_app(runtime=sample_runtime)
    with LiveServer(app, http=http_protocol(lambda: early_refusal(app))) as base:  # type: ignore[arg-type]
        yield base, sample_runtime


def test_a_flood_is_refused_before_the_middleware_and_counted(served: tuple[str, Runtime]) -> None:
    base, rt = served
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.post("/api/v1/chat", json=QUESTION).status_code == 200  # not saturated: as usual
        shed = _sample("ragvigil_admission_shed_total", priority="normal", reason="predicted_wait")
        http_503 = _sample("ragvigil_http_requests_total", route="/api/v1/chat", method="POST", status="503")
        with saturated(rt):
            r = client.post("/api/v1/chat", json=QUESTION)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "overloaded" and r.json()["message"]
            assert int(r.headers["retry-after"]) >= 1
            assert "x-request-id" not in r.headers  # refused before the request context
            openai = client.post(
                "/v1/chat/completions", json={"model": "ragvigil", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert openai.status_code == 503 and openai.json()["error"]["code"] == "overloaded"
            # probes and ops routes are never refused, and a crisis turn goes on to the app (the whole ceiling)
            assert client.get("/health/live").status_code == 200
            crisis = client.post("/api/v1/chat", json=CRISIS)
            assert crisis.status_code == 200 and "x-request-id" in crisis.headers
        assert _sample("ragvigil_admission_shed_total", priority="normal", reason="predicted_wait") == shed + 2
        assert _sample("ragvigil_http_requests_total", route="/api/v1/chat", method="POST", status="503") == (
            http_503 + 1
        )
        after = client.post("/api/v1/chat", json=QUESTION)
        assert after.status_code == 200 and "x-request-id" in after.headers
        # a body over the limit still gets its 413 from the app under a flood
        big = b'{"message": "' + b"x" * (rt.settings.max_body_bytes + 10) + b'"}'
        with saturated(rt):
            r = client.post("/api/v1/chat", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
