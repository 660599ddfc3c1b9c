"""The drill catalogue's numbers fit the instance they break (no server needed)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from ragvigil.config import BreakerSettings
from ragvigil.ops.drills import DRILLS
from ragvigil.ops.drills.catalog import OPEN_WATCH_S, SLOW_USERS, enough_slow_calls, slow_enough
from ragvigil.ops.drills.client import TurnOutcome
from ragvigil.ops.drills.experiment import DrillOptions, fault_traffic


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
    # and if the breaker opens late (a busy machine), the traffic goes on until it has been open as long
    assert opts.after_heal_s >= OPEN_WATCH_S


class _Answering:
    """An instance that answers every message at once (for the traffic's own timing)."""

    url = "http://127.0.0.1:1"

    def chat(self, message: str, session_id: str | None, user_id: str | None) -> TurnOutcome:
        time.sleep(0.01)
        return TurnOutcome(time.monotonic(), 0.01, 200, "s", "m")


def _watched(healed_after_s: float | None) -> SimpleNamespace:
    watcher = SimpleNamespace(injected_at=time.monotonic(), healed_at=None)

    def heal() -> None:
        if healed_after_s is not None:
            time.sleep(healed_after_s)
            watcher.healed_at = time.monotonic()

    threading.Thread(target=heal, daemon=True).start()
    return watcher


def test_fault_traffic_goes_on_after_a_late_healing_and_not_beyond_its_bound() -> None:
    spec = DRILLS["llm-outage"]
    opts = DrillOptions(users=2, fault_s=0.5, detect_timeout_s=5.0, after_heal_s=1.0)
    late = _watched(healed_after_s=1.0)  # after the fault's traffic would have ended
    traffic = fault_traffic(_Answering(), spec, opts, late)  # type: ignore[arg-type]
    last = max(o.sent_at for o in traffic.snapshot())
    assert late.healed_at is not None and last >= late.healed_at + 0.5  # users still asking once it healed
    assert last - late.injected_at < opts.fault_s + opts.detect_timeout_s

    never = _watched(healed_after_s=None)
    traffic = fault_traffic(_Answering(), spec, DrillOptions(users=2, fault_s=0.3, detect_timeout_s=0.7), never)  # type: ignore[arg-type]
    last = max(o.sent_at for o in traffic.snapshot())
    assert 0.8 <= last - never.injected_at < 3.0  # no healing: the bound (fault_s + detect_timeout_s) stops it


def test_llm_slow_users_never_exceed_the_providers_own_concurrency_limit() -> None:
    instance = _Instance(slow_call_s=2.0, slow_call_rate=0.5, window_size=40, max_concurrency=4)
    opts = enough_slow_calls(instance, "provider:llm", DrillOptions(users=20, fault_s=8.0))  # type: ignore[arg-type]
    assert opts.users == 4  # a call past the limit is not made, so it would not count as slow
    assert opts.fault_s >= 5 * slow_enough(instance, "provider:llm")["delay_s"] + OPEN_WATCH_S  # type: ignore[arg-type]


def test_only_llm_slow_resizes_the_callers_traffic() -> None:
    assert [n for n, s in DRILLS.items() if s.traffic is not None] == ["llm-slow"]


def test_the_burst_journal_says_which_third_of_the_burst_the_slow_admitted_turns_came_from() -> None:
    from ragvigil.ops.drills.burst import latency_by_third

    admitted = [TurnOutcome(sent_at=10.0 + i / 10, latency_s=2.0 if i < 10 else 0.2, status=200) for i in range(30)]
    shed = [TurnOutcome(sent_at=10.5, latency_s=0.01, status=503, retry_after=True)]
    out = latency_by_third(admitted, shed, started=10.0)
    assert out["admitted_p95_by_third"] == [2000.0, 200.0, 200.0]  # the tail is the first seconds'
    assert out["admitted"] == {"p50": 200.0, "p95": 2000.0, "max": 2000.0}
    assert out["shed"] == {"p50": 10.0, "p95": 10.0, "max": 10.0}
    assert latency_by_third([], [], 0.0) == {
        "admitted": dict.fromkeys(("p50", "p95", "max")),
        "shed": dict.fromkeys(("p50", "p95", "max")),
    }
