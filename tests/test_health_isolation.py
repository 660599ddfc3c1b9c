"""A slow or hung check never queues copies of itself, never delays another check, and never fails readiness.

Under chat load the embedding check once waited minutes for an engine; every probe queued another
copy of it in a shared pool of four threads, so the database and disk checks "timed out after 3.0s"
behind them and /health/ready answered 503 while ragvigil could still answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.health import HealthChecks
from tests.realservers import wait_until


def blocking_check(release: threading.Event, calls: list[int]) -> Callable[[], None]:
    """A check that hangs until the test releases it (like an embedding engine busy for minutes)."""

    def check() -> None:
        calls.append(1)
        if not release.wait(120):
            raise TimeoutError("never released")

    return check


def test_ready_stays_200_while_the_embedding_check_hangs(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    release, calls = threading.Event(), []
    rt.health.add("embedding", blocking_check(release, calls), critical=False)
    rt.health.cache_s = 0  # every probe refreshes: the worst case for piling up copies
    rt.health.timeout_s = 3.0  # roomy: the database check must pass even on a loaded machine
    try:
        with TestClient(create_app(runtime=rt)) as c:
            for _ in range(8):
                ready = c.get("/health/ready")
                assert ready.status_code == 200, ready.json()
                checks = ready.json()["checks"]
                assert checks["database"]["status"] == "ok" and checks["disk"]["status"] == "ok"
                assert checks["embedding"]["status"] == "failing"
            deep = c.get("/health")
            assert deep.status_code == 200 and deep.json()["status"] == "degraded"
            assert deep.json()["checks"]["database"]["status"] == "ok"
            assert len(calls) == 1  # one copy, however many probes
            assert rt.health.runs("embedding") == 1
            assert "still running" in deep.json()["checks"]["embedding"]["error"]

            release.set()  # the engine is free again: the next refresh shows it
            wait_until(lambda: c.get("/health/ready").json()["checks"]["embedding"]["status"] == "ok", 30, "recovery")
            assert c.get("/health/ready").json()["status"] == "ready"
    finally:
        release.set()


def test_a_hung_critical_check_does_not_delay_or_fail_the_others() -> None:
    checks = HealthChecks(timeout_s=0.2, cache_s=0)
    release, calls = threading.Event(), []
    fast: list[int] = []
    checks.add("slow", blocking_check(release, calls))
    checks.add("database", lambda: fast.append(1))
    try:
        for _ in range(6):
            by_name = {r.name: r for r in checks.results()}
            assert by_name["database"].ok, by_name["database"].error
            assert not by_name["slow"].ok
        assert len(fast) == 6 and len(calls) == 1
        assert checks.runs("database") == 6 and checks.runs("slow") == 1
        assert "still running" in (checks.results()[0].error or "")
    finally:
        release.set()
        checks.close()


def test_concurrent_callers_share_the_running_copy_of_a_check() -> None:
    checks = HealthChecks(timeout_s=30, cache_s=0)
    started, release, calls = threading.Event(), threading.Event(), []

    def slow() -> None:
        calls.append(1)
        started.set()
        release.wait(60)

    checks.add("slow", slow)
    out: list[bool] = []
    callers = [threading.Thread(target=lambda: out.append(checks.results()[0].ok)) for _ in range(3)]
    try:
        callers[0].start()
        assert started.wait(30)
        for t in callers[1:]:
            t.start()
        wait_until(lambda: sum(t.is_alive() for t in callers) == 3, 30, "all three callers waiting")
        release.set()
        for t in callers:
            t.join(30)
        assert out == [True, True, True]  # each got the one copy's result
        assert len(calls) == 1 and checks.runs("slow") == 1
    finally:
        release.set()
        checks.close()


def test_readiness_does_not_wait_for_an_optional_check_that_already_answered_once() -> None:
    checks = HealthChecks(timeout_s=30, cache_s=0)
    gate, calls = threading.Event(), []
    gate.set()
    checks.add("database", lambda: None)
    checks.add("embedding", blocking_check(gate, calls), critical=False)
    try:
        assert all(r.ok for r in checks.results())  # a first result for everyone
        gate.clear()  # from now on the embedding check hangs (until released)
        ready = {r.name: r for r in checks.results(wait_optional=False)}  # returns without waiting 30 s
        assert ready["database"].ok and ready["embedding"].ok  # its last result, while the new copy runs
        assert checks.runs("embedding") == 2 and len(calls) == 2
    finally:
        gate.set()
        checks.close()


def test_ready_stays_200_while_questions_hold_every_embedding_engine(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    embedder = rt.embedder.inner
    rt.health.cache_s = 0
    rt.health.timeout_s = 3.0  # roomy: the database check must pass even on a loaded 2-core machine
    held = [embedder._pool.get() for _ in range(embedder.engines)]  # as long questions would
    try:
        with TestClient(create_app(runtime=rt)) as c:
            for _ in range(8):
                ready = c.get("/health/ready")
                assert ready.status_code == 200, ready.json()
                assert ready.json()["checks"]["database"]["status"] == "ok"
            embedding = c.get("/health").json()["checks"]["embedding"]
            assert embedding["status"] == "failing"
            assert "engines stayed busy" in embedding["error"] or "still running" in embedding["error"]
    finally:
        for e in held:
            embedder._pool.put(e)


def test_a_check_hung_for_good_does_not_keep_the_process_from_exiting() -> None:
    import subprocess
    import sys

    script = (
        "import threading\n"
        "from ragvigil.ops.health import HealthChecks\n"
        "checks = HealthChecks(timeout_s=0.1)\n"
        "checks.add('stuck', threading.Event().wait)\n"  # never returns
        "print(checks.results()[0].error)\n"
        "checks.close()\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:  # a guard against hanging, not a timing assertion
        done = None
    assert done is not None, "the process did not exit while a health check was stuck"
    assert done.returncode == 0 and "still running" in done.stdout, done.stderr
