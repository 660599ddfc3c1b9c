"""The adapters over other subsystems' switches: registered only when the subsystem exists, each with its way back.

The objects here implement the published contracts of those subsystems (router.force/status,
retriever.mode, safe_mode, features) in a few lines, so the pairs are checked before they merge.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ragvigil.ops.remediation import ActionParamsError, ActionRegistry, NothingChanged
from ragvigil.ops.remediation.adapters import ACTOR, register_adapters


class Router:
    def __init__(self) -> None:
        self.forced: dict[str, str] = {}
        self.calls: list[tuple[str, str, str]] = []

    def status(self) -> list[dict]:
        return [{"name": "primary", "state": self.forced.get("primary", "closed")}, {"name": "extractive"}]

    def force(self, name: str, state: str, by: str) -> None:
        self.calls.append((name, state, by))
        self.forced[name] = state


class Mode:
    def __init__(self) -> None:
        self.s = {"mode": "hybrid", "forced": False}

    def state(self) -> dict:
        return dict(self.s)

    def force_lexical(self, reason: str, by: str) -> None:
        self.s = {"mode": "lexical_only", "forced": True, "reason": reason}

    def restore(self, by: str) -> None:
        self.s = {"mode": "hybrid", "forced": False}


class Safe:
    def __init__(self) -> None:
        self.active = False

    def enter(self, reason: str, by: str) -> None:
        self.active = True

    def leave(self, by: str) -> None:
        self.active = False


class Features:
    def __init__(self) -> None:
        self.off: set[str] = set()

    def enabled(self, name: str) -> bool:
        return name not in self.off

    def shed(self, name: str, reason: str, by: str) -> None:
        self.off.add(name)

    def restore(self, name: str, by: str) -> None:
        self.off.discard(name)


def test_nothing_is_registered_for_a_subsystem_the_runtime_lacks() -> None:
    actions = ActionRegistry()
    assert register_adapters(actions, SimpleNamespace(retriever=SimpleNamespace())) == []
    assert actions.names() == []


def test_each_adapter_changes_its_subsystem_and_its_rollback_undoes_it() -> None:
    router, mode, safe, features = Router(), Mode(), Safe(), Features()
    rt = SimpleNamespace(router=router, retriever=SimpleNamespace(mode=mode), safe_mode=safe, features=features)
    actions = ActionRegistry()
    added = register_adapters(actions, rt)
    assert len(added) == 10 and all(actions.get(n).rollback for n in added)

    assert "forced open" in actions.apply("breaker.open", {"provider": "primary"})
    actions.rollback("breaker.open", {"provider": "primary"})
    assert router.calls == [("primary", "open", ACTOR), ("primary", "auto", ACTOR)]
    with pytest.raises(ActionParamsError):
        actions.apply("breaker.open", {"provider": "nope"})
    with pytest.raises(ActionParamsError):
        actions.apply("provider.failover", {})

    actions.apply("retrieval.lexical_only", {"reason": "vector store down"})
    assert mode.state()["mode"] == "lexical_only"
    with pytest.raises(NothingChanged):
        actions.apply("retrieval.lexical_only", {})  # already forced: changing nothing is not a success
    actions.rollback("retrieval.lexical_only", {})
    assert mode.state() == {"mode": "hybrid", "forced": False}

    actions.apply("safe_mode.enter", {})
    assert safe.active
    actions.rollback("safe_mode.enter", {})
    assert not safe.active
    with pytest.raises(NothingChanged):
        actions.apply("safe_mode.leave", {})

    actions.apply("features.shed", {"feature": "contextual_search"})
    assert not features.enabled("contextual_search")
    actions.rollback("features.shed", {"feature": "contextual_search"})
    assert features.enabled("contextual_search")


def test_on_a_real_runtime_every_action_is_registered_and_acts_on_the_real_subsystem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The adapters against the objects the runtime really builds, not stand-ins: each changes its
    subsystem, and its rollback puts it back."""
    from ragvigil.app import Runtime
    from ragvigil.ops.remediation.actions import ACTION_NAMES
    from tests.conftest import make_settings

    rt = Runtime(make_settings(tmp_path))
    try:
        assert set(ACTION_NAMES) <= set(rt.actions.names())
        rt.actions.apply("retrieval.lexical_only", {"reason": "drill"})
        assert rt.retriever.mode.state()["mode"] == "lexical_only"
        rt.actions.rollback("retrieval.lexical_only", {"reason": "drill"})
        assert rt.retriever.mode.state()["mode"] == "hybrid"
        rt.actions.apply("features.shed", {"feature": "contextual_search"})
        assert rt.features.enabled("contextual_search") is False
        rt.actions.rollback("features.shed", {"feature": "contextual_search"})
        assert rt.features.enabled("contextual_search") is True
        rt.actions.apply("safe_mode.enter", {"reason": "drill"})
        assert rt.safe_mode.active is True
        rt.actions.rollback("safe_mode.enter", {"reason": "drill"})
        assert rt.safe_mode.active is False
    finally:
        rt.close()
