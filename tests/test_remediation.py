"""Verified remediation on a real runtime: alert → action → verified, or rolled back and notified.

The alert service is ticked on its own clock (as the alert tests do), so the verification window is
crossed by evaluation time, never by sleeping; the database, the journal, the incident timeline, the
audit log and the webhook receiver are all real.
"""

from __future__ import annotations

import shutil
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from ragvigil.app import Runtime
from ragvigil.chat.sessions import StoredMessage
from ragvigil.ops import metrics
from ragvigil.ops.remediation import ACTOR, load_policies
from tests.conftest import make_settings
from tests.receivers import http_receiver


def _count(action: str, result: str) -> float:
    sample = metrics.REGISTRY.get_sample_value(
        "ragvigil_remediation_actions_total", {"action": action, "result": result}
    )
    return sample or 0.0


def _journal_turns(rt: Runtime, n: int) -> list[str]:
    """Turns kept in the journal, as Persist keeps them while the database is unavailable."""
    ids = []
    for i in range(n):
        session = uuid.uuid4().hex
        now = datetime.now(UTC)
        msgs = [
            StoredMessage(uuid.uuid4().hex, "user", f"question {i}", now),
            StoredMessage(uuid.uuid4().hex, "assistant", f"answer {i}", now, degraded=True),
        ]
        rt.journal.write(session, "default", None, msgs)
        ids.append(session)
    metrics.JOURNAL_PENDING.set(len(rt.journal.pending()))
    return ids


def _remediation_events(rt: Runtime, incident_id: str) -> list[dict]:
    return [e for e in rt.incidents.get(incident_id)["timeline"] if e["kind"] == "remediation"]


def test_chat_turns_journaled_fires_replays_the_journal_and_is_verified(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    assert rt.alerts is not None and "journal.replay" in rt.actions
    sessions = _journal_turns(rt, 3)
    verified_before = _count("journal.replay", "verified")
    t0 = time.time()
    rt.alerts.tick(t0)
    rt.alerts.tick(t0 + 60)
    assert not rt.remediation.status()["recent"]  # pending for 2 minutes first: nothing acts yet
    rt.alerts.tick(t0 + 121)  # ChatTurnsJournaled fires → the replay-journal policy runs
    [run] = rt.remediation.status()["recent"]
    assert run["action"] == "journal.replay" and run["stage"] == "verifying", run
    assert run["signal_before"] == 3.0 and "replayed 3" in run["changed"]
    assert rt.journal.pending() == []  # the action really emptied the journal
    for session in sessions:
        assert [m.role for m in rt.sessions.messages(session)] == ["user", "assistant"]
    rt.alerts.tick(t0 + 124)  # the alert resolves and the signal is 0: verified
    [run] = rt.remediation.status()["recent"]
    assert run["stage"] == "verified" and run["result"] == "verified" and run["signal_after"] == 0.0
    assert _count("journal.replay", "verified") - verified_before == 1
    stages = [e["detail"]["stage"] for e in _remediation_events(rt, run["incident_id"])]
    assert stages == ["applied", "verified"]
    audited = rt.audit.query(action="remediation.journal.replay")
    assert {a.actor for a in audited} == {ACTOR} and {a.result for a in audited} == {"applied", "verified"}


class Pause:
    """An action with a visible effect: while applied, the instance drains (new requests get 503)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.log: list[str] = []

    def apply(self, params: object) -> str:
        self.rt.draining = True
        self.log.append("apply")
        return "instance paused (draining)"

    def rollback(self, params: object) -> str:
        self.rt.draining = False
        self.log.append("rollback")
        return "instance resumed"


POLICY = textwrap.dedent(
    """\
    policies:
      - name: pause-on-rejected-turns
        match: {alert: JournalEntriesRejected}
        action: test.pause
        cooldown: 10m
        verify: {window: 30s, signal: ragvigil_journal_rejected_turns, below: 1, rollback: true}
    """
)


def test_a_remediation_whose_verification_fails_is_rolled_back_and_notified(
    sample_data_dir: Path, tmp_path: Path
) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    with http_receiver() as hook:
        channels = [{"name": "ops", "type": "webhook", "url": hook.url}]
        rt = Runtime(make_settings(d, alerts={"channels": channels}))
        try:
            assert rt.alerts is not None
            # a cause the action cannot fix: a journal entry the replay sets aside stays until a person acts
            (rt.journal.dir / "20260101T000000000000-broken.json").write_text("{not json", encoding="utf-8")
            rt.replay_journal()
            assert len(rt.journal.rejected()) == 1
            pause = Pause(rt)
            rt.actions.register("test.pause", pause.apply, pause.rollback, "pause the instance")
            rt.remediation.use_policies(load_policies(POLICY, known_actions=rt.actions.names()))
            rolled_back_before = _count("test.pause", "rolled_back")
            rt.notifier.start()
            t0 = time.time()
            rt.alerts.tick(t0)  # JournalEntriesRejected fires at once (for: 0s) → the pause is applied
            assert rt.draining and pause.log == ["apply"]
            rt.alerts.tick(t0 + 15)  # still firing inside the window: still waiting
            assert rt.draining and rt.remediation.status()["recent"][0]["stage"] == "verifying"
            rt.alerts.tick(t0 + 31)  # the window is over, the alert still fires: rolled back
            assert not rt.draining and pause.log == ["apply", "rollback"]
            [run] = rt.remediation.status()["recent"]
            assert run["stage"] == "rolled_back" and run["result"] == "rolled_back"
            assert "still firing" in run["reason"] and run["signal_before"] == run["signal_after"] == 1.0
            assert _count("test.pause", "rolled_back") - rolled_back_before == 1
            stages = [e["detail"]["stage"] for e in _remediation_events(rt, run["incident_id"])]
            assert stages == ["applied", "verification_failed", "rolled_back"]
            assert rt.notifier.drain(10)
            failed = [
                r.body for r in hook.requests if r.body["alerts"][0]["labels"]["alertname"] == "RemediationFailed"
            ]
            assert len(failed) == 1, [r.body for r in hook.requests]
            labels = failed[0]["alerts"][0]["labels"]
            assert labels["action"] == "test.pause" and labels["trigger"] == "JournalEntriesRejected"
            assert "instance resumed" in failed[0]["alerts"][0]["annotations"]["description"]
        finally:
            rt.close()
