"""The drills ragvigil knows, and how to run one by name against an instance."""

from __future__ import annotations

from ragvigil.ops.drills.burst import run_burst
from ragvigil.ops.drills.client import InstanceClient
from ragvigil.ops.drills.experiment import DrillOptions, DrillResult, DrillSpec, Fault, run_fault_drill

PROVIDER_ALERTS = ("LLMProviderFailing", "AllLLMProvidersFailing", "ProviderBreakerOpen")


def remote_provider(client: InstanceClient) -> str | None:
    """The first provider of the router that is not ``extractive`` (the one an LLM drill breaks)."""
    for p in client.providers() or []:
        if p.get("kind", p.get("name")) != "extractive" and p.get("name") != "extractive":
            return str(p["name"])
    return None


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
            expects_remediation=True,
            applies=_needs_llm,
        ),
        DrillSpec(
            "llm-slow",
            "the LLM endpoint takes seconds per call",
            Fault("provider:{provider}", "slow", {"delay_s": 8.0}),
            (*PROVIDER_ALERTS, "HighP95Latency"),
            severity="P2",
            applies=_needs_llm,
        ),
        DrillSpec(
            "network-loss",
            "the LLM endpoint cannot be reached (connections refused)",
            Fault("provider:{provider}", "refuse"),
            PROVIDER_ALERTS,
            expects_remediation=True,
            applies=_needs_llm,
        ),
        DrillSpec(
            "vector-store-down",
            "every vector search fails",
            Fault("vector_store", "error"),
            ("VectorStoreDown", "RetrievalDegraded"),
            expects_remediation=True,
        ),
        DrillSpec(
            "database-down",
            "every database call fails",
            Fault("database", "error"),
            ("RagvigilUnhealthy", "HealthCheckFailing", "DatabaseDown"),
        ),
        DrillSpec(
            "redis-down",
            "Redis stops answering",
            Fault("redis", "error"),
            ("RedisDown",),
            applies=_needs_redis,
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
