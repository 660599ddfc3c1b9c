"""The shared-state seams without Redis: breaker records between two routers, the query cache's second
tier, and the Redis link's backoff against a port where nothing listens (a real refused connection)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pytest

from ragvigil.config import RedisSettings, SecretUrl
from ragvigil.knowledge.embeddings import CachedQueryEmbedder
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.ops import metrics
from ragvigil.ops.shared.link import RedisLink, RedisUnavailable
from ragvigil.providers.breaker_store import BreakerRecord, MemoryBreakerStore
from ragvigil.providers.extractive import ExtractiveGenerator
from ragvigil.providers.metered import MeteredGenerator
from ragvigil.providers.router import build_router
from tests.conftest import make_settings
from tests.realservers import free_port
from tests.slow_llm import Reply, scripted_llm
from tests.test_provider_router import FAST_BREAKER, ask, provider


@pytest.fixture(scope="module")
def extractive(tmp_path_factory: pytest.TempPathFactory) -> MeteredGenerator:
    return MeteredGenerator(ExtractiveGenerator(Tokenizer(tmp_path_factory.mktemp("tok"))))


@contextlib.contextmanager
def two_replicas(tmp_path: Path, extractive: MeteredGenerator):  # type: ignore[no-untyped-def]
    """(store, the scripted LLM answering 503, router of replica-1, router of replica-2) sharing one store."""
    store = MemoryBreakerStore()
    with scripted_llm(Reply(503)) as llm:
        settings = make_settings(tmp_path, providers=[provider("a", llm, retries=0, breaker=FAST_BREAKER)])
        one, two = build_router(settings, extractive), build_router(settings, extractive)
        one.share(store, "replica-1")
        two.share(store, "replica-2")
        try:
            yield store, llm, one, two
        finally:
            one.close()
            two.close()


def test_a_provider_opened_by_one_router_is_skipped_by_the_other_until_its_cool_down(
    tmp_path: Path, extractive: MeteredGenerator
) -> None:
    with two_replicas(tmp_path, extractive) as (store, llm, one, two):
        for _ in range(4):  # the window of replica 1 fills with failures: open
            assert ask(one).provider == "extractive"
        assert llm.calls == 4 and one.is_open("a")
        out = ask(two)
        assert out.provider == "extractive" and "a skipped (breaker_open)" in (out.degraded_reason or "")
        assert llm.calls == 4  # replica 2 never called the provider replica 1 found dead
        status = two.status()[0]
        assert status["breaker"] == "open" and status["breaker_source"] == "replica replica-1"
        # a record past its cool-down no longer holds replica 2 back: it tries the provider itself
        record = store.read("a")
        assert record is not None and record.opened_at is not None
        store.publish("a", BreakerRecord("open", time.time() - 61, None, 60, "replica-1", time.time()))
        llm.set(Reply(text="back"))
        assert ask(two).provider == "a" and llm.calls == 5
        # forcing is shared too: an operator's "open" on replica 2 holds replica 1
        one.force("a", "auto", "test")
        two.force("a", "open", "operator:test")
        assert one.is_open("a") and ask(one).provider == "extractive" and llm.calls == 5


def _gauge(provider: str) -> float:
    return metrics.REGISTRY.get_sample_value("ragvigil_provider_breaker_state", {"provider": provider}) or 0.0


def test_every_replica_skipping_a_provider_shows_its_breaker_open_and_follows_a_forced_close(
    tmp_path: Path, extractive: MeteredGenerator
) -> None:
    with two_replicas(tmp_path, extractive) as (_, llm, one, two):
        for _ in range(4):
            ask(one)
        assert one.is_open("a")
        # the gauge is one per process: as replica 2's own registry would, start it from closed
        metrics.PROVIDER_BREAKER_STATE.labels("a").set(0)
        two.routes[0].shown = None
        assert two.is_open("a")  # skipped because of replica 1's record...
        assert _gauge("a") == 1  # ...and shown open here, so ProviderBreakerOpen fires on this replica too
        # an operator forces the provider closed on replica 1: replica 2 follows, and calls it again
        llm.set(Reply(text="back"))
        one.force("a", "closed", "operator:test")
        assert not two.is_open("a")
        status = two.status()[0]
        assert status["forced"] == "closed" and status["forced_by"] == "replica replica-1"
        assert ask(two).provider == "a"
        # handed back to automatic on replica 1: replica 2's breaker is automatic again too
        one.force("a", "auto", "operator:test")
        two.is_open("a")
        status = two.status()[0]
        assert status["forced"] is None and status["forced_by"] is None
        # an operator's own force on replica 2 is never undone by another replica's record
        two.force("a", "open", "operator:two")
        one.force("a", "auto", "operator:test")
        one.is_open("a")
        assert two.is_open("a") and two.status()[0]["forced_by"] == "operator:two"


class DictTier:
    """A second cache tier in a dict (what a Redis tier does, minus the network)."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.clears = 0

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.values[key] = value

    def clear(self) -> int:
        n = len(self.values)
        self.values.clear()
        self.clears += 1
        return n

    def generation(self) -> int | None:
        return self.clears


class CountingEmbedder:
    dim, name = 4, "toy"

    def __init__(self) -> None:
        self.calls = 0

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        self.calls += 1
        return np.full(self.dim, float(len(text)), dtype=np.float32)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def test_a_vector_embedded_by_one_replica_is_reused_by_another_and_clear_empties_both_tiers() -> None:
    tier = DictTier()
    e1, e2 = CountingEmbedder(), CountingEmbedder()
    one, two = CachedQueryEmbedder(e1, 16, tier), CachedQueryEmbedder(e2, 16, tier)
    v = one.embed_query("Where is my  ORDER?")
    w = two.embed_query("where is my order?")  # the same normalised question
    assert e1.calls == 1 and e2.calls == 0 and (v == w).all()
    assert all(k.startswith("toy:") for k in tier.values)  # keyed by model
    tier.values[next(iter(tier.values))] = b"short"  # a value of the wrong size is not a vector
    three = CachedQueryEmbedder(CountingEmbedder(), 16, tier)
    three.embed_query("where is my order?")
    assert three.inner.calls == 1  # type: ignore[attr-defined]
    assert one.clear() == 2 and not tier.values  # its local entry and the shared one
    assert two.clear() == 1
    one.embed_query("how do refunds work?")
    two.embed_query("how do refunds work?")  # from the shared tier, now held in two's memory too
    one.clear()
    calls = e2.calls
    two.embed_query("how do refunds work?")
    assert e2.calls == calls + 1  # two saw the clear made by one: its own copy went with it


def test_the_redis_link_backs_off_after_a_refused_connection_and_probes_once() -> None:
    now = [1000.0]
    settings = RedisSettings(url=SecretUrl(f"redis://127.0.0.1:{free_port()}/0"), retry_initial_s=1, retry_max_s=4)
    link = RedisLink(settings, clock=lambda: now[0])
    tries = []

    def ping(r):  # type: ignore[no-untyped-def]
        tries.append(now[0])
        return r.ping()

    fallbacks = metrics.REDIS_FALLBACKS.labels("test")._value.get()
    with pytest.raises(RedisUnavailable, match="ConnectionError"):
        link.call("test", ping)
    assert link.up is False and link.status()["limits"] == "local"
    assert metrics.REDIS_UP.labels(link.target)._value.get() == 0
    for _ in range(5):  # backing off: nothing reaches the network
        with pytest.raises(RedisUnavailable, match="down"):
            link.call("test", ping)
    assert len(tries) == 1
    assert metrics.REDIS_FALLBACKS.labels("test")._value.get() == fallbacks + 6
    now[0] += 1.0  # the next try is due: one probe, it fails, the wait doubles
    with pytest.raises(RedisUnavailable, match="ConnectionError"):
        link.call("test", ping)
    now[0] += 1.5
    with pytest.raises(RedisUnavailable, match="down"):
        link.call("test", ping)
    assert len(tries) == 2
    now[0] += 0.5
    with pytest.raises(RedisUnavailable, match="ConnectionError"):
        link.call("test", ping)
    assert len(tries) == 3
    link.close()


def test_redis_is_off_by_default_and_a_url_that_is_not_redis_is_refused() -> None:
    assert not RedisSettings().enabled and not RedisSettings(url="").enabled  # type: ignore[arg-type]
    assert RedisSettings(url=SecretUrl("redis://10.0.0.5:6379/2")).enabled
    with pytest.raises(ValueError, match=r"redis\.url must be"):
        RedisSettings(url=SecretUrl("http://10.0.0.5:6379"))
