"""The drills ragvigil knows, and how to run one by name against an instance."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ragvigil.ops.drills.backup import run_backup_drill
from ragvigil.ops.drills.burst import run_burst
from ragvigil.ops.drills.client import InstanceClient
from ragvigil.ops.drills.experiment import DrillOptions, DrillResult, DrillSpec, Fault, run_fault_drill
from ragvigil.ops.drills.safety import needs_canary, run_safety_drill

PROVIDER_ALERTS = ("ProviderBreakerOpen", "LLMProviderFailing", "AllLLMProvidersFailing")
VECTOR_ALERTS = ("VectorStoreDown", "RetrievalDegraded")
DATABASE_ALERTS = ("RagvigilUnhealthy", "HealthCheckFailing")
SLOW_USERS = 8  # users of llm-slow at least; the bench measures the extractive baseline with as many
OPEN_WATCH_S = 8.0  # llm-slow's traffic once the breaker is open: what users get then


def remote_provider(client: InstanceClient) -> str | None:
    """The first provider of the router that is not ``extractive`` (the one an LLM drill breaks)."""
    for p in client.providers() or []:
        if p.get("kind") != "extractive":
            return str(p["name"])
    return None


def breaker_opened(client: InstanceClient, target: str) -> str | None:
    """The router failed over: the broken provider's breaker is open (no turn waits for it any more)."""
    name = target.split(":", 1)[-1]
    for p in client.providers() or []:
        if p.get("name") == name and p.get("breaker") in ("open", "half_open"):
            return f"breaker of {name} {p['breaker']}"
    return None


def lexical_only(client: InstanceClient, target: str) -> str | None:
    """Retrieval switched to BM25 alone: turns stop paying for the failing vector side."""
    checks = client.health().get("checks", {})
    mode = (checks.get("vector_store", {}).get("details") or {}).get("retrieval_mode") or {}
    return "retrieval lexical_only" if mode.get("mode") == "lexical_only" else None


def journaling(client: InstanceClient, target: str) -> str | None:
    """Turns go to the journal while the database is down (read from the instance's own gauge)."""
    value = client.metric("ragvigil_journal_pending_turns")
    return f"{value:g} turn(s) journaled" if value else None


def limits_local(client: InstanceClient, target: str) -> str | None:
    """Redis failing, the instance decides in process (rate limits, breakers, cache) and still answers."""
    details = client.health().get("checks", {}).get("redis", {}).get("details") or {}
    return "rate limits, breakers and cache local" if details.get("limits") == "local" else None


def _provider(client: InstanceClient, target: str) -> dict[str, Any]:
    name = target.split(":", 1)[-1]
    return next((p for p in client.providers() or [] if p.get("name") == name), {})


def slow_enough(client: InstanceClient, target: str) -> dict[str, Any]:
    """A delay the broken provider's breaker counts as slow (half as long again as its ``slow_call_s``).

    A delay under the breaker's threshold only makes turns slow: the breaker never trips on its
    slow-call rate, and the drill would measure nothing but patience. Capped at 30 s (the default
    ``faults.max_delay_s``).
    """
    slow = float(_provider(client, target).get("slow_call_s") or 10.0)  # 10 s: the default slow_call_s
    return {"delay_s": round(min(30.0, max(slow * 1.5, slow + 1.0)), 3)}


def enough_slow_calls(client: InstanceClient, target: str, opts: DrillOptions) -> DrillOptions:
    """Users and time enough that the slow calls fill the breaker's slow-call rate, and then some.

    A slow call counts once it ends. The breaker opens when ``slow_call_rate`` of its last
    ``window_size`` calls were slow, and the window still holds the baseline's fast calls, so it takes
    ``window_size × slow_call_rate`` slow calls: at least ``SLOW_USERS`` users (bounded by the
    provider's own concurrency limit: a call past it is not made, so it would not count), for as
    many rounds of one delay each as that takes, plus ``OPEN_WATCH_S`` to see what users get once
    the breaker is open. The adaptive concurrency limit shrinks as the calls slow down, so fewer of
    them run at once than planned on a busy machine: the traffic then goes on until the breaker has
    been open ``OPEN_WATCH_S`` (``after_heal_s``), within the fault's bound.
    """
    p = _provider(client, target)
    window, rate = int(p.get("window_size") or 20), float(p.get("slow_call_rate") or 0.8)
    delay = slow_enough(client, target)["delay_s"]
    users = min(max(opts.users, SLOW_USERS), int(p.get("max_concurrency") or 16), 32)
    rounds = math.ceil(math.ceil(window * rate) / users)
    fault_s = max(opts.fault_s, rounds * delay + OPEN_WATCH_S)
    return replace(opts, users=users, fault_s=fault_s, after_heal_s=max(opts.after_heal_s, OPEN_WATCH_S))


def shedding(client: InstanceClient, target: str) -> str | None:
    """Admission protected the admitted turns: requests shed with 503 at once and non-core features off."""
    state = client.admission()
    shed = sum(int(v) for v in (state.get("shed") or {}).values())
    off = [str(f["name"]) for f in state.get("features") or [] if not f.get("enabled") and f.get("by") == "admission"]
    if not shed:
        return None
    return f"admission shed {shed} request(s)" + (f", features off: {', '.join(off)}" if off else "")


def _needs_llm(client: InstanceClient) -> str | None:
    return None if remote_provider(client) else "no LLM provider besides extractive is configured"


def _needs_redis(client: InstanceClient) -> str | None:
    checks = client.health().get("checks", {})
    return None if "redis" in checks else "Redis is not configured on this instance"


DRILLS: dict[str, DrillSpec] = {
    s.name: s
    for s in (
        DrillSpec(
            "llm-outage",
            "the LLM endpoint answers every call with an error",
            Fault("provider:{provider}", "error"),
            PROVIDER_ALERTS,
            applies=_needs_llm,
            healed=breaker_opened,
        ),
        DrillSpec(
            "llm-slow",
            "the LLM endpoint takes seconds per call",
            Fault("provider:{provider}", "slow", sized=slow_enough),
            (*PROVIDER_ALERTS, "HighP95Latency", "HighAverageLatency"),
            severity="P2",
            applies=_needs_llm,
            healed=breaker_opened,
            traffic=enough_slow_calls,
        ),
        DrillSpec(
            "network-loss",
            "the LLM endpoint cannot be reached (connections refused)",
            Fault("provider:{provider}", "refuse"),
            PROVIDER_ALERTS,
            applies=_needs_llm,
            healed=breaker_opened,
        ),
        DrillSpec(
            "vector-store-down",
            "every vector search fails",
            Fault("vector_store", "error"),
            VECTOR_ALERTS,
            healed=lexical_only,
        ),
        DrillSpec(
            "database-down",
            "every database call fails",
            Fault("database", "error"),
            DATABASE_ALERTS,
            healed=journaling,
        ),
        DrillSpec(
            "redis-down",
            "Redis stops answering",
            Fault("redis", "error"),
            ("RedisDown",),
            severity="P2",
            applies=_needs_redis,
            healed=limits_local,
        ),
        DrillSpec(
            "burst-10x",
            "ten times the measured capacity at once",
            None,
            ("LoadShedding",),
            severity="P2",
            healed=shedding,
        ),
        DrillSpec(
            "safety-filter",
            "the safety filter silently passes everything",
            Fault("safety", "off"),
            ("SafetyCanaryFailing",),
            expects_remediation=True,  # safe mode entered, and left once the canary passes
            applies=needs_canary,
            runner=run_safety_drill,
        ),
        DrillSpec(
            "backup-restore",
            "a backup of the live instance while users chat, verified by restoring it to scratch",
            None,
            (),
            severity="P2",
            runner=run_backup_drill,
        ),
    )
}


def run(name: str, client: InstanceClient, opts: DrillOptions | None = None) -> DrillResult:
    """Run one drill; one that does not apply to the instance comes back ``skipped`` with the reason."""
    spec = DRILLS[name]
    opts = opts or DrillOptions()
    if spec.applies is not None and (reason := spec.applies(client)):
        return DrillResult(spec.name, skipped=reason)
    if spec.runner is not None:
        return spec.runner(client, spec, opts)
    if spec.fault is None:
        return run_burst(client, spec, opts)
    target = spec.fault.target
    if "{provider}" in target:
        target = target.format(provider=remote_provider(client))
    if spec.traffic is not None:
        opts = spec.traffic(client, target, opts)
    if spec.fault.sized is not None:
        params = spec.fault.params | spec.fault.sized(client, target)
        spec = replace(spec, fault=replace(spec.fault, params=params))
    return run_fault_drill(client, spec, opts, target)
