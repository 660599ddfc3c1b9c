"""The drill catalogue's numbers fit the instance they break (no server needed)."""

from __future__ import annotations

from ragvigil.config import BreakerSettings
from ragvigil.ops.drills import DRILLS


def test_llm_slow_makes_enough_slow_calls_to_open_the_breaker_and_watches_after() -> None:
    spec = DRILLS["llm-slow"]
    assert spec.fault is not None
    delay = spec.fault.params["delay_s"]
    # a slow call counts once it ends: the users in flight when it ends must reach the breaker's minimum
    assert spec.min_users >= BreakerSettings().minimum_calls
    # the window still holds the baseline's fast calls: opening at the slow-call rate takes
    # window_size * slow_call_rate slow calls, i.e. this many rounds of min_users calls of delay_s each
    b = BreakerSettings()
    rounds = -(-round(b.window_size * b.slow_call_rate) // spec.min_users)
    # and after them, time left to measure turns once the breaker is open
    assert spec.min_fault_s >= rounds * delay + 5
    # the other drills keep the caller's options
    assert all(s.min_users == 0 and s.min_fault_s == 0 for n, s in DRILLS.items() if n != "llm-slow")
