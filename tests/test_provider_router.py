"""The provider router against real local OpenAI-compatible servers and a real TCP proxy.

Requests are counted at the fake servers, so "the dead provider was not touched" is a fact about
sockets, not about our own bookkeeping. Breakers and backoff run on a test clock and a recorded sleep.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.knowledge.retrieval import Hit
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.ops.access import Role
from ragvigil.ops.metrics import REGISTRY
from ragvigil.providers.base import GenerationRequest
from ragvigil.providers.extractive import ExtractiveGenerator
from ragvigil.providers.metered import MeteredGenerator
from ragvigil.providers.router import ProviderRouter, build_router
from tests.conftest import LiveServer, local_client, make_settings
from tests.slow_llm import Reply, ScriptedLLM, scripted_llm
from tests.toxics import toxic_proxy

PASSAGE = Hit(1, "d1", "Shipping", "shipping.md", "Shipping", "Shipping takes three days to most countries.", 1.0)
HISTORY = [("user", "an earlier question " * 40), ("assistant", "an earlier answer " * 40)] * 3
FAST_BREAKER = {"window_size": 4, "minimum_calls": 4, "failure_rate": 0.5, "open_s": 60, "half_open_calls": 1}


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def extractive(tmp_path_factory: pytest.TempPathFactory) -> MeteredGenerator:
    return MeteredGenerator(ExtractiveGenerator(Tokenizer(tmp_path_factory.mktemp("tok"))))


def provider(name: str, llm: ScriptedLLM | str, **kw: Any) -> dict[str, Any]:
    url = llm if isinstance(llm, str) else llm.url
    return {"name": name, "base_url": url, "timeout_s": 5, "backoff_initial_s": 0.01, **kw}


def make_router(tmp_path: Path, extractive: MeteredGenerator, *providers: dict[str, Any]) -> tuple:
    clock, sleeps = Clock(), []
    settings = make_settings(tmp_path, providers=list(providers))
    router = build_router(settings, extractive, clock=clock, sleep=sleeps.append)
    return router, clock, sleeps


def ask(router: ProviderRouter, timeout_s: float | None = 30.0, history: list | None = None):  # type: ignore[no-untyped-def]
    return router.generate(GenerationRequest("How long does shipping take?", [PASSAGE], history or [], "en", timeout_s))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_fails_over_in_order_after_the_retries_and_names_who_answered(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(503)) as a, scripted_llm(Reply(text="from b")) as b:
        router, _, sleeps = make_router(tmp_path, extractive, provider("a", a, retries=2), provider("b", b))
        before = metric("ragvigil_provider_failovers_total", provider="a", reason="unavailable")
        out = ask(router)
        assert (out.provider, out.text, out.degraded_reason) == ("b", "from b", None)
        assert a.calls == 3 and b.calls == 1 and len(sleeps) == 2  # two jittered backoffs, then on to b
        assert all(0 <= s <= 2.0 for s in sleeps)
        assert metric("ragvigil_provider_failovers_total", provider="a", reason="unavailable") == before + 1
        router.close()


def test_401_is_never_retried_marks_the_key_bad_and_fails_over(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(401)) as a, scripted_llm() as b:
        router, _, sleeps = make_router(tmp_path, extractive, provider("a", a, retries=3), provider("b", b))
        assert ask(router).provider == "b" and a.calls == 1 and sleeps == []
        assert router.status()[0]["key_bad"] is True and router.is_open("a")
        assert metric("ragvigil_provider_key_rejected", provider="a") == 1
        assert ask(router).provider == "b" and a.calls == 1  # a bad key is not tried again
        router.force("a", "auto", by="ops")  # the operator fixed the key
        assert metric("ragvigil_provider_key_rejected", provider="a") == 0 and not router.is_open("a")
        router.close()


def test_429_waits_as_long_as_retry_after_says_and_a_long_one_fails_over(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(429, {"Retry-After": "1.5"}), Reply()) as a, scripted_llm() as b:
        router, _, sleeps = make_router(tmp_path, extractive, provider("a", a), provider("b", b))
        assert ask(router).provider == "a" and a.calls == 2 and sleeps == [1.5]
        a.set(Reply(429, {"Retry-After": "120"}))  # beyond retry_after_max_s: go elsewhere now
        assert ask(router).provider == "b" and a.calls == 3 and sleeps == [1.5]
        router.close()


def test_context_too_long_is_cut_before_the_call_and_once_after_a_refusal(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    too_long = Reply(400, body='{"error": {"code": "context_length_exceeded", "message": "maximum context length"}}')
    with scripted_llm(Reply()) as a, scripted_llm() as b:
        router, _, _ = make_router(
            tmp_path, extractive, provider("a", a, context_tokens=400, max_tokens=64), provider("b", b)
        )
        assert ask(router, history=HISTORY).provider == "a"
        sent = a.requests[-1]["messages"]
        assert 1 < len(sent) < 2 + len(HISTORY)  # the oldest turns were dropped to fit the window
        a.set(too_long, Reply())
        assert ask(router).provider == "a" and a.calls == 3
        a.set(too_long)
        assert ask(router).provider == "b" and a.calls == 5  # refused twice: trimmed once, then failed over
        router.close()


def test_an_open_breaker_sends_turns_on_without_touching_the_dead_provider(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(503)) as a, scripted_llm() as b:
        router, clock, _ = make_router(
            tmp_path, extractive, provider("a", a, retries=0, breaker=FAST_BREAKER), provider("b", b)
        )
        opened = metric("ragvigil_provider_breaker_transitions_total", provider="a", **{"from": "closed", "to": "open"})
        for _ in range(4):
            assert ask(router).provider == "b"
        assert a.calls == 4 and router.is_open("a")
        assert metric("ragvigil_provider_breaker_state", provider="a") == 1
        assert (
            metric("ragvigil_provider_breaker_transitions_total", provider="a", **{"from": "closed", "to": "open"})
            == opened + 1
        )
        for _ in range(5):
            assert ask(router).provider == "b"
        assert a.calls == 4  # no call reached the dead provider while it was open
        # after the cool-down one probe is let through; it succeeds, so the breaker closes
        a.set(Reply(text="a is back"))
        clock.now += 60
        assert ask(router).provider == "a" and a.calls == 5
        assert router.status()[0]["breaker"] == "closed"
        router.close()


def test_a_failed_half_open_probe_opens_it_again(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(503)) as a, scripted_llm() as b:
        router, clock, _ = make_router(
            tmp_path, extractive, provider("a", a, retries=0, breaker=FAST_BREAKER), provider("b", b)
        )
        for _ in range(4):
            ask(router)
        clock.now += 60
        assert ask(router).provider == "b" and a.calls == 5  # the probe failed
        assert router.status()[0]["breaker"] == "open" and ask(router).provider == "b" and a.calls == 5
        router.close()


def test_every_provider_open_answers_extractive_at_once_flagged_degraded(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm() as a, scripted_llm() as b:
        router, _, _ = make_router(tmp_path, extractive, provider("a", a), provider("b", b))
        router.force("a", "open", by="ops")
        router.force("b", "open", by="ops")
        out = ask(router)
        assert out.provider == "extractive" and "three days" in out.text
        assert out.degraded_reason and "breaker_open" in out.degraded_reason
        assert a.calls == 0 and b.calls == 0
        with pytest.raises(Exception, match="every provider"):
            router.check()
        router.close()


def test_no_attempt_starts_once_the_turn_has_no_time_left(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm() as a:
        router, _, _ = make_router(tmp_path, extractive, provider("a", a))
        out = ask(router, timeout_s=0.01)
        assert out.provider == "extractive" and "no_time" in (out.degraded_reason or "") and a.calls == 0
        router.close()


def test_a_hung_endpoint_times_out_within_the_turn_budget_and_its_breaker_opens(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm() as upstream, toxic_proxy(upstream.url, "timeout") as proxy, scripted_llm() as b:
        breaker = {**FAST_BREAKER, "window_size": 2, "minimum_calls": 2}
        router = build_router(
            make_settings(
                tmp_path,
                providers=[provider("hung", proxy.url + "/v1", timeout_s=30, breaker=breaker), provider("b", b)],
            ),
            extractive,
        )
        for _ in range(2):  # the provider's own timeout is 30 s: the turn's 0.3 s left is what cuts it
            out = ask(router, timeout_s=0.3)
            assert out.provider == "extractive" and b.calls == 0  # nothing left for b: no attempt starts
            assert out.degraded_reason == "hung failed (timeout), b skipped (no_time); answered by extractive"
        assert proxy.connections == 2 and router.is_open("hung") and upstream.calls == 0
        assert ask(router).provider == "b" and proxy.connections == 2
        router.close()


def test_a_reset_connection_fails_over_without_a_retry(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm() as upstream, toxic_proxy(upstream.url, "reset") as proxy, scripted_llm() as b:
        router, _, _ = make_router(tmp_path, extractive, provider("a", proxy.url + "/v1", retries=3), provider("b", b))
        assert ask(router).provider == "b" and proxy.connections == 1
        proxy.set("none")
        assert ask(router).provider == "a" and upstream.calls == 1
        router.close()


def test_a_slow_link_makes_slow_calls_and_a_closed_port_fails_over(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm() as upstream, toxic_proxy(upstream.url, "latency") as proxy, scripted_llm() as b:
        proxy.set("latency", latency_s=0.3)
        breaker = {"window_size": 2, "minimum_calls": 2, "slow_call_s": 0.2, "slow_call_rate": 1.0, "open_s": 600}
        router = build_router(
            make_settings(tmp_path, providers=[provider("a", proxy.url + "/v1", breaker=breaker), provider("b", b)]),
            extractive,
        )
        assert [ask(router).provider for _ in range(2)] == ["a", "a"] and router.is_open("a")
        router.force("a", "auto", by="test")
        proxy.set("down")  # the port is closed: connection refused, no retry
        assert ask(router).provider == "b" and upstream.calls == 2
        proxy.set("none")
        assert ask(router).provider == "a" and upstream.calls == 3
        router.close()


def test_a_stream_fails_over_before_its_first_delta(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(500)) as a, scripted_llm(Reply(text="streamed by b")) as b:
        router, _, _ = make_router(tmp_path, extractive, provider("a", a, retries=0), provider("b", b))
        stream = router.stream(GenerationRequest("How long?", [PASSAGE], timeout_s=10))
        assert "".join(stream).strip() == "streamed by b"
        assert stream.provider == "b" and stream.degraded_reason is None and a.calls == 1
        router.force("b", "open", by="ops")
        router.force("a", "open", by="ops")
        stream = router.stream(GenerationRequest("How long does shipping take?", [PASSAGE], timeout_s=10))
        assert "three days" in "".join(stream) and stream.provider == "extractive" and stream.degraded_reason
        router.close()


def test_the_old_single_openai_setting_becomes_a_one_provider_list(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(text="old style")) as a:
        settings = make_settings(tmp_path, generator="openai", openai={"base_url": a.url, "model": "m1"})
        router = build_router(settings, extractive)
        assert [s["name"] for s in router.status()] == ["openai", "extractive"]
        assert ask(router).provider == "openai" and a.requests[0]["model"] == "m1"
        router.close()


def test_slow_successes_alone_open_the_breaker(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    with scripted_llm(Reply(hang_s=0.3)) as a:
        breaker = {"window_size": 2, "minimum_calls": 2, "slow_call_s": 0.2, "slow_call_rate": 1.0, "open_s": 600}
        router = build_router(make_settings(tmp_path, providers=[provider("a", a, breaker=breaker)]), extractive)
        assert [ask(router).provider for _ in range(2)] == ["a", "a"]  # answered, but each took >= 0.3 s
        assert router.is_open("a") and router.status()[0]["slow_rate"] == 1.0
        assert ask(router).provider == "extractive" and a.calls == 2
        router.close()


def test_calls_hanging_past_slow_call_s_open_the_breaker_while_they_still_run(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    with scripted_llm(Reply(hang_s=30)) as a:
        breaker = {"window_size": 2, "minimum_calls": 2, "slow_call_s": 0.3, "slow_call_rate": 1.0, "open_s": 600}
        router = build_router(
            make_settings(tmp_path, providers=[provider("a", a, timeout_s=30, breaker=breaker)]), extractive
        )
        hung = [threading.Thread(target=ask, args=(router,), daemon=True) for _ in range(2)]
        for t in hung:
            t.start()
        router.overdue_watch.start()  # what a serving instance runs: a look at the calls in flight
        deadline = time.monotonic() + 20
        while not router.is_open("a") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert router.is_open("a") and all(t.is_alive() for t in hung)  # open while both calls still hang
        assert router.status()[0]["slow_rate"] == 1.0
        out = ask(router)
        assert out.provider == "extractive" and a.calls == 2  # the next turn does not wait for it
        router.overdue_watch.stop()
        router.close()


def test_at_its_concurrency_limit_a_provider_is_passed_over(tmp_path: Path, extractive) -> None:  # type: ignore[no-untyped-def]
    import threading

    with scripted_llm(Reply(hang_s=30)) as a, scripted_llm(Reply(text="b")) as b:
        router, _, _ = make_router(tmp_path, extractive, provider("a", a, max_concurrency=1), provider("b", b))
        first = threading.Thread(target=ask, args=(router,))
        first.start()
        for _ in range(500):
            if a.calls:
                break
            threading.Event().wait(0.01)
        assert router.status()[0]["in_flight"] == 1
        out = ask(router)
        assert out.provider == "b" and a.calls == 1
        a.stop.set()  # the held call answers now
        first.join(10)
        assert router.status()[0]["in_flight"] == 0
        router.close()


def test_the_provider_list_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unique"):
        make_settings(tmp_path, providers=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValidationError, match="last"):
        make_settings(tmp_path, providers=[{"name": "x", "kind": "extractive"}, {"name": "a"}])
    with pytest.raises(ValidationError, match="minimum_calls"):
        make_settings(tmp_path, providers=[{"name": "a", "breaker": {"window_size": 2, "minimum_calls": 3}}])
    monkeypatch.setenv("RAGVIGIL_PROVIDERS", '[{"name": "env", "base_url": "http://127.0.0.1:9/v1", "retries": 0}]')
    settings = make_settings(tmp_path)
    assert [(p.name, p.retries) for p in settings.providers] == [("env", 0)]


# --- through the API ---------------------------------------------------------------------------
@pytest.fixture
def routed(sample_data_dir: Path, tmp_path: Path) -> Iterator[tuple[Runtime, ScriptedLLM, ScriptedLLM]]:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    with scripted_llm(Reply(text="Three days [1].")) as a, scripted_llm(Reply(text="B says three days [1].")) as b:
        rt = Runtime(make_settings(d, providers=[provider("primary", a), provider("backup", b)]))
        try:
            yield rt, a, b
        finally:
            rt.close()


def test_forcing_a_breaker_through_the_api_is_audited_and_reroutes_chat(routed) -> None:  # type: ignore[no-untyped-def]
    rt, a, b = routed
    operator = rt.keys.create("op", Role.operator)[1]
    viewer = rt.keys.create("v", Role.viewer)[1]
    app = create_app(runtime=rt)
    with local_client(app) as c:
        q = {"message": "How do I export my notes?"}
        first = c.post("/api/v1/chat", json=q).json()
        assert first["provider"] == "primary" and first["degraded"] is False and a.calls == 1
        listed = c.get("/api/v1/ops/providers", headers={"X-API-Key": viewer}).json()["providers"]
        assert [p["name"] for p in listed] == ["primary", "backup", "extractive"] and listed[0]["breaker"] == "closed"
        refused = c.put("/api/v1/ops/providers/primary/breaker", json={"state": "open"}, headers={"X-API-Key": viewer})
        assert refused.status_code == 403
        forced = c.put("/api/v1/ops/providers/primary/breaker", json={"state": "open"}, headers={"X-API-Key": operator})
        assert forced.status_code == 200 and forced.json()["breaker"] == "open" and forced.json()["forced_by"] == "op"
        assert c.post("/api/v1/chat", json=q).json()["provider"] == "backup" and a.calls == 1
        c.put("/api/v1/ops/providers/backup/breaker", json={"state": "open"}, headers={"X-API-Key": operator})
        body = c.post("/api/v1/chat", json=q).json()
        assert body["provider"] == "extractive" and body["degraded"] is True and b.calls == 1
        assert any("breaker_open" in r for r in body["degraded_reasons"])
        with c.stream("POST", "/api/v1/chat/stream", json=q) as r:
            raw = r.read().decode()
        assert '"provider": "extractive"' in raw and '"degraded": true' in raw
        missing = c.put("/api/v1/ops/providers/nope/breaker", json={"state": "open"}, headers={"X-API-Key": operator})
        assert missing.status_code == 404 and missing.json()["code"] == "provider_not_found"
        bad = c.put("/api/v1/ops/providers/primary/breaker", json={"state": "ajar"}, headers={"X-API-Key": operator})
        assert bad.status_code == 422
        c.put("/api/v1/ops/providers/primary/breaker", json={"state": "auto"}, headers={"X-API-Key": operator})
        assert c.post("/api/v1/chat", json=q).json()["provider"] == "primary"
    rows = rt.audit.query("provider.breaker", None, None, 10)
    assert {(r.actor, r.target, r.result) for r in rows} >= {
        ("op", "primary", "ok"),
        ("op", "backup", "ok"),
        ("op", "nope", "not_found"),
    }


def test_each_provider_is_a_health_check_under_generation(routed) -> None:  # type: ignore[no-untyped-def]
    rt, _, _ = routed
    rt.router.force("primary", "open", by="ops")
    with local_client(create_app(runtime=rt)) as c:
        health = c.get("/health").json()
    assert health["checks"]["provider:primary"]["status"] == "failing"
    assert health["checks"]["provider:backup"]["status"] == "ok"
    deps = {d["name"] for d in health["graph"]["generation"]["depends_on"]}
    assert {"provider:primary", "provider:backup"} <= deps
    assert health["graph"]["generation"]["status"] == "degraded" and health["status"] != "unhealthy"


def test_the_openai_sdk_sees_nothing_new_with_the_router_in_front(routed) -> None:  # type: ignore[no-untyped-def]
    rt, a, _ = routed
    key = rt.keys.create("sdk", Role.client)[1]
    with LiveServer(create_app(runtime=rt)) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        done = client.chat.completions.create(
            model="ragvigil", messages=[{"role": "user", "content": "How do I export my notes?"}]
        )
        assert done.model == "ragvigil" and done.choices[0].message.content == "Three days [1]."
        chunks = client.chat.completions.create(  # another wording: the same one is the answer cache's
            model="ragvigil", messages=[{"role": "user", "content": "How can I export my notes?"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == "Three days [1]."
        assert a.calls == 2
        # the CLI drives the same running instance
        op = rt.keys.create("cli", Role.operator)[1]
        run = CliRunner().invoke(cli_app, ["providers", "breaker", "primary", "open", "--url", base, "--api-key", op])
        assert run.exit_code == 0 and "closed → open" in run.output, run.output
        run = CliRunner().invoke(cli_app, ["providers", "list", "--url", base, "--api-key", op, "--json"])
        rows = json.loads(run.output.strip().splitlines()[-1])
        assert [(r["name"], r["breaker"]) for r in rows][:2] == [("primary", "open"), ("backup", "closed")]
        run = CliRunner().invoke(cli_app, ["providers", "breaker", "nope", "auto", "--url", base, "--api-key", op])
        assert run.exit_code == 1 and "provider_not_found" in run.output
