"""Fault injection for drills: ``build_faults`` gives the runtime its ``FaultRegistry`` (``rt.faults``).

A drill or a test calls ``rt.faults.inject(target, kind, duration_s, params, by)``, ``list()``,
``clear(id)`` and ``clear_all()`` (or the admin API ``/api/v1/ops/faults``). Targets:
``provider:<name>``, ``vector_store``, ``embedding``, ``database``, ``latency``, ``cpu``, ``redis``
(asked by ``ops.shared.link.RedisLink`` before every Redis call), ``safety`` (the runtime's safety check:
``rt.safety = rt.faults.safety(check)``).
"""

from __future__ import annotations

from typing import Any

from ragvigil.config import Settings
from ragvigil.ops.faults.registry import (
    KINDS,
    Fault,
    FaultInvalid,
    FaultNotFound,
    FaultRegistry,
    FaultsDisabled,
    TooManyFaults,
    exempt,
)

__all__ = [
    "KINDS",
    "Fault",
    "FaultInvalid",
    "FaultNotFound",
    "FaultRegistry",
    "Faults",
    "FaultsDisabled",
    "TooManyFaults",
    "build_faults",
    "exempt",
    "startup_problem",
]


class Faults(FaultRegistry):
    """The registry plus the wrappers that put its hooks at the runtime's seams.

    With fault injection off nothing is wrapped: an instance that cannot be drilled pays nothing.
    """

    def generator(self, inner: Any) -> Any:
        from ragvigil.ops.faults.hooks import FaultyGenerator

        return FaultyGenerator(inner, self) if self.enabled else inner

    def vector_store(self, inner: Any) -> Any:
        from ragvigil.ops.faults.hooks import FaultyVectorStore

        return FaultyVectorStore(inner, self) if self.enabled else inner

    def embedder(self, inner: Any) -> Any:
        from ragvigil.ops.faults.hooks import FaultyEmbedder

        return FaultyEmbedder(inner, self) if self.enabled else inner

    def safety(self, inner: Any) -> Any:
        """The safety check the pipeline and the canary share, under the ``safety`` fault (None stays None)."""
        from ragvigil.ops.faults.hooks import FaultySafetyCheck

        return FaultySafetyCheck(inner, self) if self.enabled and inner is not None else inner


def build_faults(settings: Settings, engine: Any = None, audit: Any = None) -> Faults:
    """The runtime's fault registry; with ``engine`` its database hooks are attached, with ``audit``
    a fault that expires by itself is audited as ``fault.clear`` by ``ragvigil``."""

    def expired(fault: Fault) -> None:
        if audit is not None:
            audit.record("ragvigil", "fault.clear", "expired", fault.target, None, {"id": fault.id, "kind": fault.kind})

    faults = Faults(settings.faults, on_expired=expired)
    if engine is not None and faults.enabled:
        from ragvigil.ops.faults.hooks import attach_database

        attach_database(engine, faults)
    return faults


def startup_problem(settings: Settings) -> str | None:
    """Why a production instance must not start with fault injection on (unless explicitly allowed)."""
    f = settings.faults
    if settings.profile.value == "production" and f.enabled and not f.allow_in_production:
        return (
            "faults.enabled is on in production: anyone with the admin key could break this instance; "
            "turn it off, or set faults.allow_in_production=true for a deliberate production drill"
        )
    return None
