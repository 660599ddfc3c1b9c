from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ragvigil.ops.metrics_doc import render

ROOT = Path(__file__).resolve().parents[1]


def _samples(client: TestClient) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_doc_is_generated_from_the_registry() -> None:
    assert (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8") == render(), (
        "docs/metrics.md is stale: run `python -m ragvigil.ops.metrics_doc > docs/metrics.md`"
    )


def test_catalogue_moves_with_traffic(client: TestClient) -> None:
    before = _samples(client)
    q = "How do I export my notes to PDF?"
    client.post("/api/v1/chat", json={"message": q})
    client.post("/api/v1/chat", json={"message": q})  # same question: served by the answer cache
    client.post("/api/v1/chat", json={"message": "明天杭州会下雨吗？"})  # nothing relevant
    after = _samples(client)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("ragvigil_llm_requests_total", provider="extractive", outcome="ok") == 1  # the repeat: cached
    observed_calls = moved("ragvigil_llm_request_duration_seconds_count", provider="extractive")
    assert observed_calls == 1  # a count of observations, not a timing
    assert moved("ragvigil_answer_cache_requests_total", outcome="hit") == 1
    assert moved("ragvigil_cache_requests_total", cache="query_embedding", result="hit") >= 1
    assert moved("ragvigil_cache_requests_total", cache="query_embedding", result="miss") >= 2
    assert moved("ragvigil_retrieval_relevant_hits_count") == 3
    assert moved("ragvigil_retrieval_empty_total") == 1
    assert moved("ragvigil_chat_answers_total", kind="no_answer") == 1
    assert (
        moved("ragvigil_vector_store_operations_total", op="search", outcome="ok") >= 2
    )  # the repeat searched nothing
    assert moved("ragvigil_stage_outcomes_total", stage="persist", outcome="ok") == 3
    assert _value(after, "ragvigil_http_requests_in_flight") == 1  # the /metrics scrape itself
    for gauge in (
        "process_resident_memory_bytes",
        "process_open_fds",
        "ragvigil_host_cpu_utilization_ratio",
        "ragvigil_host_memory_used_ratio",
        "ragvigil_data_disk_used_ratio",
    ):
        assert gauge in after, gauge
    assert 0 <= _value(after, "ragvigil_data_disk_used_ratio") <= 1


def test_label_sets_stay_bounded_under_hostile_paths(client: TestClient) -> None:
    for i in range(30):
        client.get(f"/api/v1/sessions/random-{i}/messages")
        client.get(f"/nope/{i}")
    routes = {s.labels["route"] for s in _samples(client)["ragvigil_http_requests_total"]}
    assert "/api/v1/sessions/{session_id}/messages" in routes and "unmatched" in routes
    assert not any("random-" in r or "/nope/" in r for r in routes)
