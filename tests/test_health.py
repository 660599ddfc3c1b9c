"""Deep health: real failures of real dependencies roll up through the graph."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.health import CheckResult, rollup
from tests.conftest import local_client


def _leaf(name: str, ok: bool) -> CheckResult:
    return CheckResult(name, ok, 1.0, None if ok else "down")


@pytest.mark.parametrize(
    ("failing", "chat", "node", "node_status"),
    [
        ((), "healthy", "retrieval", "healthy"),
        (("vector_store",), "degraded", "retrieval", "degraded"),
        (("embedding",), "degraded", "retrieval", "degraded"),
        (("generator",), "degraded", "generation", "degraded"),
        (("database",), "unhealthy", "retrieval", "unhealthy"),
        (("disk",), "unhealthy", "persistence", "unhealthy"),
        (("vector_store", "generator"), "degraded", "chat", "degraded"),
    ],
)
def test_rollup(failing: tuple[str, ...], chat: str, node: str, node_status: str) -> None:
    names = ("database", "vector_store", "embedding", "generator", "disk")
    graph = rollup([_leaf(n, n not in failing) for n in names])
    assert graph["chat"]["status"] == chat and graph[node]["status"] == node_status


def test_deep_health_and_system_info(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert set(body["checks"]) == {"database", "vector_store", "embedding", "generator", "disk"}
    assert body["graph"]["chat"]["depends_on"][0] == {"name": "retrieval", "required": True}
    info = client.get("/api/v1/system/info").json()
    assert info["version"] and info["process"]["rss_bytes"] > 0 and info["host"]["cpus"] >= 1
    assert info["uptime_s"] >= 0


def test_unwritable_vector_index_degrades_but_stays_ready(sample_runtime: Runtime) -> None:
    index_dir = sample_runtime.settings.index_dir
    sample_runtime.health.cache_s = 0
    with local_client(create_app(runtime=sample_runtime)) as c:
        shutil.rmtree(index_dir)
        index_dir.write_text("not a directory any more")
        deep = c.get("/health")
        assert deep.status_code == 200 and deep.json()["status"] == "degraded"
        assert deep.json()["checks"]["vector_store"]["status"] == "failing"
        assert deep.json()["graph"]["retrieval"]["status"] == "degraded"
        ready = c.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert c.post("/api/v1/chat", json={"message": "专业版年付多少钱？"}).status_code == 200


def test_full_disk_makes_the_service_unready(sample_runtime: Runtime) -> None:
    sample_runtime.settings.min_free_disk_mb = 10**12  # more than any disk has: the check fails for real
    with local_client(create_app(runtime=sample_runtime)) as c:
        deep = c.get("/health")
        assert deep.status_code == 503 and deep.json()["status"] == "unhealthy"
        assert "MB free" in deep.json()["checks"]["disk"]["error"]
        assert c.get("/health/ready").status_code == 503
        assert c.get("/health/live").status_code == 200  # never restart the process for a dependency


def test_health_results_are_cached_between_probes(sample_runtime: Runtime) -> None:
    calls = []
    sample_runtime.health.add("counter", lambda: calls.append(1), critical=False)
    sample_runtime.health.cache_s = 60
    with local_client(create_app(runtime=sample_runtime)) as c:
        for _ in range(5):
            c.get("/health/ready")
            c.get("/health")
    assert len(calls) == 1


def test_an_expensive_check_that_passed_is_trusted_for_a_while_and_a_failure_rechecked_at_once() -> None:
    from ragvigil.ops.health import HealthChecks

    checks = HealthChecks(cache_s=0)
    calls: list[int] = []
    failing = [False]

    def expensive() -> None:
        calls.append(1)
        if failing[0]:
            raise RuntimeError("engine gone")

    checks.add("embedding", expensive, critical=False, recheck_passed_s=60)
    for _ in range(5):
        assert checks.results()[0].ok
    assert len(calls) == 1
    checks._slots["embedding"].last_at -= 3600  # the trust ran out
    failing[0] = True
    assert not checks.results()[0].ok and not checks.results()[0].ok
    assert len(calls) == 3  # failures are re-run on every refresh
    checks.close()
