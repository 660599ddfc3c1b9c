"""Remediation policies are validated like alert rules; cooldown and hourly limits skip with the reason."""

from __future__ import annotations

import textwrap

import pytest

from ragvigil.ops import metrics
from ragvigil.ops.alerts.engine import AlertEngine
from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.rules import load_rules
from ragvigil.ops.remediation import (
    ActionRegistry,
    NothingChanged,
    PolicyFileError,
    Remediator,
    default_policies,
    load_policies,
)

T0 = 1_700_000_000.0

BAD = textwrap.dedent(
    """\
    policies:
      - name: typo
        match: {alert: ChatTurnsJournaled}
        action: journal.replya
      - name: bad-signal
        match: {alert: X}
        action: cache.clear
        verify: {signal: "rate(foo[5m]", below: 1}
      - name: long-window
        match: {alert: X}
        action: cache.clear
        verify: {window: 2h, signal: foo, below: 1}
      - name: no-bound
        match: {alert: X}
        action: cache.clear
        verify: {signal: foo}
      - name: empty-band
        match: {alert: X}
        action: cache.clear
        verify: {signal: foo, below: 1, above: 2}
      - name: no-match
        match: {}
        action: cache.clear
      - name: both
        match: {alert: X, cause: vector_store_down}
        action: cache.clear
      - name: too-often
        match: {alert: X}
        action: cache.clear
        max_per_hour: 1000
      - name: ok
        match: {alert: X}
        action: cache.clear
      - name: ok
        match: {alert: Y}
        action: cache.clear
      - name: extra
        match: {alert: X}
        action: cache.clear
        retries: 3
      - name: cause-unchecked
        match: {cause: vector_store_down}
        action: retrieval.lexical_only
    """
)


def test_invalid_policy_files_name_every_policy_and_field_at_once() -> None:
    with pytest.raises(PolicyFileError) as caught:
        load_policies(BAD, "p.yaml")
    problems = caught.value.problems
    expected = [
        ("typo", "action: unknown action 'journal.replya'"),
        ("bad-signal", "verify.signal: not valid PromQL"),
        ("long-window", "verify.window: must be more than 0s and at most 3600s"),
        ("no-bound", "a signal needs a bound"),
        ("empty-band", "above must be less than below"),
        ("no-match", "match needs an alert (alertname) or a cause"),
        ("both", "not both"),
        ("too-often", "max_per_hour"),
        ("ok", "name: defined twice"),
        ("extra", "retries"),
        ("cause-unchecked", "verify needs a signal"),
    ]
    assert len(problems) == len(expected), problems
    for (name, text), problem in zip(expected, problems, strict=True):
        assert problem.startswith(f"policy {name}:") and text in problem, problem


def test_not_yaml_or_not_a_policy_list_is_refused() -> None:
    for text in ("policies: [", "- a\n- b\n", "policies: []\nrules: []\n"):
        with pytest.raises(PolicyFileError):
            load_policies(text)


def test_the_default_policies_load_and_each_verifies_with_a_signal() -> None:
    pack = default_policies()
    assert {p.spec.action for p in pack.policies} >= {"journal.replay"}
    assert all(p.signal_node is not None for p in pack.policies)
    assert "ragvigil_journal_pending_turns" in pack.metric_names()


class Box:
    """Something an action really changes: the number of times it was reset."""

    def __init__(self) -> None:
        self.resets = 0
        self.dirty = True

    def reset(self, params: object) -> str:
        if not self.dirty:
            raise NothingChanged("already clean")
        self.resets += 1
        self.dirty = False
        return "reset the box"


RULES = "groups:\n  - name: t\n    rules:\n      - alert: Broken\n        expr: broken > 0\n        labels: {severity: P2}\n"
POLICY = textwrap.dedent(
    """\
    policies:
      - name: reset-box
        match: {alert: Broken}
        action: box.reset
        cooldown: 60s
        max_per_hour: 2
        verify: {window: 30s, signal: broken, below: 1, rollback: false}
    """
)


class World:
    def __init__(self) -> None:
        self.history = SignalHistory(retention_s=7200)
        self.engine = AlertEngine(load_rules(RULES), self.history)
        self.box = Box()
        actions = ActionRegistry()
        actions.register("box.reset", self.box.reset)
        self.remediator = Remediator(actions, load_policies(POLICY, known_actions=actions.names()), source=self.history)

    def at(self, t: float, broken: float) -> list:
        if broken:
            self.box.dirty = True
        self.history.add(T0 + t, [("broken", {}, broken)])
        return self.remediator.observe(self.engine.evaluate(T0 + t), T0 + t)


def _count(result: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value(
            "ragvigil_remediation_actions_total", {"action": "box.reset", "result": result}
        )
        or 0.0
    )


def test_cooldown_and_hourly_limit_skip_and_say_why() -> None:
    w = World()
    skipped_before, verified_before = _count("skipped"), _count("verified")
    [first] = w.at(0, 1)  # firing (for: 0s): the box is reset
    assert first.stage == "verifying" and w.box.resets == 1
    w.at(10, 0)  # resolved and the signal is back below 1: verified
    assert first.stage == "verified" and first.signal_after == 0.0
    [early] = w.at(20, 1)  # fires again 20 s after the run: inside the 60 s cooldown
    assert early.stage == "skipped" and early.reason.startswith("cooldown") and w.box.resets == 1
    w.at(30, 0)
    [second] = w.at(70, 1)
    assert second.stage == "verifying" and w.box.resets == 2
    w.at(80, 0)
    [limited] = w.at(140, 1)  # cooldown over, but two runs in the last hour
    assert limited.stage == "skipped" and limited.reason.startswith("hourly limit") and w.box.resets == 2
    w.at(150, 0)
    [later] = w.at(3700, 1)  # the hour has passed
    assert later.stage == "verifying" and w.box.resets == 3
    assert _count("skipped") - skipped_before == 2 and _count("verified") - verified_before == 2
    recent = w.remediator.status()["recent"]
    assert [r["stage"] for r in recent][:2] == ["verifying", "skipped"]


def test_an_action_that_changes_nothing_is_a_failed_remediation() -> None:
    w = World()
    failed_before = _count("failed")
    w.at(0, 1)
    w.box.dirty = False  # already fixed by someone else: the next reset changes nothing
    w.remediator.policies.policies[0].spec.cooldown = 0
    w.history.add(T0 + 5, [("broken", {}, 0.0)])
    w.remediator.observe(w.engine.evaluate(T0 + 5), T0 + 5)
    w.history.add(T0 + 10, [("broken", {}, 1.0)])
    [run] = w.remediator.observe(w.engine.evaluate(T0 + 10), T0 + 10)
    assert run.stage == "failed" and "changed nothing" in run.reason
    assert _count("failed") - failed_before == 1


def test_a_diagnosed_cause_runs_its_policy_and_is_verified_by_its_signal() -> None:
    w = World()
    cause_policy = POLICY.replace("name: reset-box", "name: reset-on-cause").replace(
        "match: {alert: Broken}", "match: {cause: box_jammed}"
    )
    w.remediator.use_policies(load_policies(cause_policy, known_actions=["box.reset"]))
    w.history.add(T0, [("broken", {}, 1.0)])
    assert w.remediator.cause_diagnosed("something_else", t=T0) == []
    [run] = w.remediator.cause_diagnosed("box_jammed", t=T0)
    assert run.stage == "verifying" and run.trigger == {"cause": "box_jammed"} and w.box.resets == 1
    w.history.add(T0 + 5, [("broken", {}, 2.0)])
    w.remediator.check(T0 + 5)
    assert run.stage == "verifying"  # the signal is still outside its bounds
    w.history.add(T0 + 10, [("broken", {}, 0.0)])
    w.remediator.check(T0 + 10)
    assert run.stage == "verified" and run.signal_before == 1.0 and run.signal_after == 0.0


def test_an_action_that_hangs_fails_at_its_bound_and_the_loop_goes_on() -> None:
    import threading

    release = threading.Event()
    actions = ActionRegistry()
    actions.register("box.reset", lambda p: "done" if release.wait(30) else "")
    history = SignalHistory(retention_s=7200)
    engine = AlertEngine(load_rules(RULES), history)
    remediator = Remediator(actions, load_policies(POLICY, known_actions=["box.reset"]), source=history)
    remediator.action_timeout_s = 0.2
    try:
        history.add(T0, [("broken", {}, 1.0)])
        [run] = remediator.observe(engine.evaluate(T0), T0)
        assert run.stage == "failed" and "did not finish within" in run.reason
    finally:
        release.set()
