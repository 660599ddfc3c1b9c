"""Thin actions over the degraded-mode switches of other subsystems, each with its way back.

Registered only when the runtime has the object (``rt.router``, ``rt.retriever.mode``,
``rt.safe_mode``, ``rt.features``), so an instance without one of them simply lacks the action.
Pairs: breaker.open ↔ auto, provider.failover ↔ provider.restore, retrieval.lexical_only ↔
retrieval.hybrid, safe_mode.enter ↔ leave, features.shed ↔ restore.
"""

from __future__ import annotations

from typing import Any

from ragvigil.ops.remediation.actions import ActionParamsError, ActionRegistry, NothingChanged, Params, required

ACTOR = "ragvigil:remediation"


def _by(p: Params) -> str:
    return str(p.get("by") or ACTOR)


def _reason(p: Params, default: str) -> str:
    return str(p.get("reason") or default)


def register_adapters(actions: ActionRegistry, rt: Any) -> list[str]:
    """Register the adapters whose subsystem exists; returns their names."""
    added: list[str] = []
    router = getattr(rt, "router", None)
    if router is not None and callable(getattr(router, "force", None)):
        added += _breakers(actions, router)
    mode = getattr(getattr(rt, "retriever", None), "mode", None)
    if mode is not None and callable(getattr(mode, "force_lexical", None)):
        added += _retrieval(actions, mode)
    safe = getattr(rt, "safe_mode", None)
    if safe is not None and callable(getattr(safe, "enter", None)):
        added += _safe_mode(actions, safe)
    features = getattr(rt, "features", None)
    if features is not None and callable(getattr(features, "shed", None)):
        added += _features(actions, features)
    return added


def _breakers(actions: ActionRegistry, router: Any) -> list[str]:
    def force(p: Params, state: str, verb: str) -> str:
        name = required(p, "provider")
        if not any(s.get("name") == name for s in router.status()):
            raise ActionParamsError(f"no provider {name!r}")
        router.force(name, state, _by(p))
        return f"breaker of {name} {verb}"

    auto = lambda p: force(p, "auto", "back to automatic")  # noqa: E731
    actions.register("breaker.open", lambda p: force(p, "open", "forced open"), auto, "force a provider's breaker open")
    actions.register(
        "breaker.close", lambda p: force(p, "closed", "forced closed"), auto, "force a provider's breaker closed"
    )
    # fail over: take the provider out of the order (its breaker open) so the next one answers
    failover = lambda p: force(p, "open", "opened: turns fail over to the next provider")  # noqa: E731
    restore = lambda p: force(p, "auto", "restored to automatic")  # noqa: E731
    actions.register("provider.failover", failover, restore, "move traffic off a provider to the next one")
    actions.register("provider.restore", restore, failover, "give a provider back its automatic breaker")
    return ["breaker.open", "breaker.close", "provider.failover", "provider.restore"]


def _retrieval(actions: ActionRegistry, mode: Any) -> list[str]:
    def lexical(p: Params) -> str:
        if mode.state().get("mode") == "lexical_only" and mode.state().get("forced"):
            return ""  # already forced: nothing changed
        mode.force_lexical(_reason(p, "remediation"), _by(p))
        return "retrieval forced to lexical only (BM25)"

    def hybrid(p: Params) -> str:
        if not mode.state().get("forced"):
            return ""
        mode.restore(_by(p))
        return "retrieval back to automatic (hybrid when the vector store answers)"

    actions.register("retrieval.lexical_only", lexical, hybrid, "answer from BM25 only")
    actions.register("retrieval.hybrid", hybrid, lexical, "give retrieval back its automatic mode")
    return ["retrieval.lexical_only", "retrieval.hybrid"]


def _safe_mode(actions: ActionRegistry, safe: Any) -> list[str]:
    def enter(p: Params) -> str:
        if safe.active:
            return ""
        safe.enter(_reason(p, "remediation"), _by(p))
        return "safe mode entered: every message gets the configured safe response"

    def leave(p: Params) -> str:
        if not safe.active:
            return ""
        owner = p.get("if_entered_by")  # leave only what that actor entered (never an operator's safe mode)
        if owner and (entered_by := safe.status().get("by")) != owner:
            raise NothingChanged(f"safe mode was entered by {entered_by}, not {owner}: it stays on")
        safe.leave(_by(p))
        return "safe mode left"

    actions.register("safe_mode.enter", enter, leave, "answer every message with the safe responses")
    actions.register("safe_mode.leave", leave, enter, "leave safe mode")
    return ["safe_mode.enter", "safe_mode.leave"]


def _features(actions: ActionRegistry, features: Any) -> list[str]:
    def shed(p: Params) -> str:
        name = required(p, "feature")
        if not features.enabled(name):
            return ""
        features.shed(name, _reason(p, "remediation"), _by(p))
        return f"feature {name} switched off"

    def restore(p: Params) -> str:
        name = required(p, "feature")
        if features.enabled(name):
            return ""
        features.restore(name, _by(p))
        return f"feature {name} switched back on"

    actions.register("features.shed", shed, restore, "switch a non-core feature off")
    actions.register("features.restore", restore, shed, "switch a shed feature back on")
    return ["features.shed", "features.restore"]
