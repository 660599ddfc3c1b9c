"""The drills ragvigil knows, and how to run one by name against an instance."""

from __future__ import annotations

from ragvigil.ops.drills.burst import run_burst
from ragvigil.ops.drills.client import InstanceClient
from ragvigil.ops.drills.experiment import DrillOptions, DrillResult, DrillSpec, Fault, run_fault_drill

PROVIDER_ALERTS = ("ProviderBreakerOpen", "LLMProviderFailing", "AllLLMProvidersFailing")
VECTOR_ALERTS = ("VectorStoreDown", "RetrievalDegraded")
DATABASE_ALERTS = ("RagvigilUnhealthy", "HealthCheckFailing")
SLOW_USERS = 8  # users of llm-slow; the bench measures the extractive baseline with as many


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


def _needs_llm(client: InstanceClient) -> str | None:
    return None if remote_provider(client) else "no LLM provider besides extractive is configured"


def _needs_redis(client: InstanceClient) -> str | None:
    checks = client.health().get("checks", {})
    return None if "redis" in checks else "Redis is not configured on this instance"


def _not_yet(reason: str):  # type: ignore[no-untyped-def]
    return lambda client: reason


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
            Fault("provider:{provider}", "slow", {"delay_s": 8.0}),
            (*PROVIDER_ALERTS, "HighP95Latency", "HighAverageLatency"),
            severity="P2",
            applies=_needs_llm,
            healed=breaker_opened,
            # a slow call counts once it ends: 8 users end 8 slow calls every 8 s, and the breaker's window
            # (20 calls, still holding the fast ones of the baseline) opens at 80 % slow, after two rounds;
            # 8 s more show what users get once it is open
            min_users=SLOW_USERS,
            min_fault_s=24.0,
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
        DrillSpec("burst-10x", "ten times the measured capacity at once", None, ("LoadShedding",), severity="P2"),
        DrillSpec(
            "safety-filter",
            "the safety filter is switched off",
            Fault("safety", "error"),
            ("SafetyCanaryFailing",),
            applies=_not_yet("the safety filter arrives with the safety issue"),
        ),
    )
}


def run(name: str, client: InstanceClient, opts: DrillOptions | None = None) -> DrillResult:
    """Run one drill; one that does not apply to the instance comes back ``skipped`` with the reason."""
    spec = DRILLS[name]
    opts = opts or DrillOptions()
    if spec.applies is not None and (reason := spec.applies(client)):
        return DrillResult(spec.name, skipped=reason)
    if spec.fault is None:
        return run_burst(client, spec, opts)
    target = spec.fault.target
    if "{provider}" in target:
        target = target.format(provider=remote_provider(client))
    return run_fault_drill(client, spec, opts, target)
