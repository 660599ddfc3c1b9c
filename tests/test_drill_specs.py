"""The drill catalogue's numbers fit the instance they break (no server needed)."""

from __future__ import annotations

from typing import Any

from ragvigil.config import BreakerSettings
from ragvigil.ops.drills import DRILLS
from ragvigil.ops.drills.catalog import OPEN_WATCH_S, SLOW_USERS, enough_slow_calls, slow_enough
from ragvigil.ops.drills.experiment import DrillOptions


class _Instance:
    """What the sizing reads of an instance: its providers as `GET /api/v1/ops/providers` lists them."""

    def __init__(self, **provider: Any) -> None:
        self._providers = [{"name": "llm", "kind": "openai", **provider}, {"name": "extractive", "kind": "extractive"}]

    def providers(self) -> list[dict[str, Any]]:
        return self._providers


def test_llm_slow_makes_enough_slow_calls_to_open_the_breaker_and_watches_after() -> None:
    b = BreakerSettings()
    instance = _Instance(
        slow_call_s=b.slow_call_s, slow_call_rate=b.slow_call_rate, window_size=b.window_size, max_concurrency=16
    )
    delay = slow_enough(instance, "provider:llm")["delay_s"]  # type: ignore[arg-type]
    assert delay > b.slow_call_s  # a delay the breaker counts as slow
    opts = enough_slow_calls(instance, "provider:llm", DrillOptions(users=2, fault_s=8.0))  # type: ignore[arg-type]
    # a slow call counts once it ends: the users in flight when it ends must reach the breaker's minimum
    assert opts.users >= max(SLOW_USERS, b.minimum_calls)
    # the window still holds the baseline's fast calls: opening at the slow-call rate takes
    # window_size * slow_call_rate slow calls, i.e. this many rounds of `users` calls of `delay` each
    rounds = -(-round(b.window_size * b.slow_call_rate) // opts.users)
    # and after them, time left to see turns answered once the breaker is open
    assert opts.fault_s >= rounds * delay + OPEN_WATCH_S


def test_llm_slow_users_never_exceed_the_providers_own_concurrency_limit() -> None:
    instance = _Instance(slow_call_s=2.0, slow_call_rate=0.5, window_size=40, max_concurrency=4)
    opts = enough_slow_calls(instance, "provider:llm", DrillOptions(users=20, fault_s=8.0))  # type: ignore[arg-type]
    assert opts.users == 4  # a call past the limit is not made, so it would not count as slow
    assert opts.fault_s >= 5 * slow_enough(instance, "provider:llm")["delay_s"] + OPEN_WATCH_S  # type: ignore[arg-type]


def test_only_llm_slow_resizes_the_callers_traffic() -> None:
    assert [n for n, s in DRILLS.items() if s.traffic is not None] == ["llm-slow"]
