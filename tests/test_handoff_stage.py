"""The ``handoff`` stage on a ``Turn`` built by hand, the policy's settings, and the held-out crisis set's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ragvigil.app import Runtime
from ragvigil.chat.handoff import HandoffPolicy, build_handoffs, deteriorating, negative_streak
from ragvigil.chat.handoff.stage import CRISIS_NOTICE, NOTICE
from ragvigil.chat.history import SessionHistory
from ragvigil.chat.journal import Journal
from ragvigil.chat.pipeline import Turn
from ragvigil.chat.sessions import SessionStore
from ragvigil.chat.understanding import Emotion, Intent, SafetyVerdict, TurnAnalysis
from ragvigil.config import HandoffSettings
from ragvigil.storage.db import Database, migrate
from ragvigil.storage.models import HandoffRecord
from tests.conftest import ROOT, make_settings


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'rv.db'}")
    migrate(d.engine)
    return d


def _turn(analysis: TurnAnalysis | None, answer: str = "Shipping takes three days [1].", lang: str = "en") -> Turn:
    turn = Turn(message="…", kb="default", user_id="u1", language=lang, analysis=analysis, answer=answer)
    turn.open_session()
    turn.sources = [{"n": 1}]
    return turn


def test_the_stage_queues_sets_the_turns_handoff_and_tells_the_user(db: Database, tmp_path: Path) -> None:
    parts = build_handoffs(
        HandoffSettings(), db, tmp_path, SessionHistory(SessionStore(db), Journal(tmp_path / "journal"))
    )
    crisis = _turn(TurnAnalysis(safety=SafetyVerdict("self_harm", "critical")), "请拨打 12356。", "zh")
    parts.stage(crisis)
    assert crisis.handoff is not None and (crisis.handoff.reason, crisis.handoff.priority) == ("crisis", 1)
    assert crisis.answer == f"请拨打 12356。\n\n{CRISIS_NOTICE['zh']}"
    with db.session() as s:
        record = s.get(HandoffRecord, crisis.handoff.id)
        assert record is not None and record.message_id == crisis.user_message_id and record.status == "open"

    calm = _turn(TurnAnalysis(emotion=Emotion("joy", "positive", 0.7), intent=Intent("pricing", 0.9)))
    parts.stage(calm)
    assert calm.handoff is None and calm.answer == "Shipping takes three days [1]."

    complaint = _turn(TurnAnalysis(intent=Intent("billing_dispute", 0.8, "handoff")))  # the action decides
    parts.stage(complaint)
    assert complaint.handoff is not None and complaint.handoff.reason == "complaint"
    assert complaint.answer.endswith(NOTICE["en"])


def test_the_most_urgent_trigger_wins_and_off_means_off() -> None:
    both = _turn(
        TurnAnalysis(safety=SafetyVerdict("self_harm", "high"), intent=Intent("human_request", 0.9, "handoff"))
    )
    decided = HandoffPolicy(HandoffSettings()).decide(both)
    assert decided is not None and decided.reason == "crisis"
    assert HandoffPolicy(HandoffSettings(enabled=False)).decide(both) is None
    assert HandoffPolicy(HandoffSettings()).decide(_turn(None)) is None


def test_streaks_count_from_the_newest_turn() -> None:
    assert negative_streak(["negative", "very_negative", "neutral", "negative", "very_negative"]) == 2
    assert negative_streak(["negative", None]) == 0
    assert deteriorating(["neutral", "negative", "negative", "very_negative"], 3)
    assert not deteriorating(["negative", "negative", "positive"], 2)


def test_handoff_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGVIGIL_HANDOFF__NEGATIVE_TURNS", "5")
    monkeypatch.setenv("RAGVIGIL_HANDOFF__NO_ANSWER_TURNS", "4")
    s = make_settings(tmp_path)
    assert (s.handoff.negative_turns, s.handoff.no_answer_turns) == (5, 4)


def test_the_held_out_crisis_set_is_balanced_and_says_what_it_is_for() -> None:
    path = ROOT / "bench" / "data" / "crisis_heldout.yaml"
    text = path.read_text(encoding="utf-8")
    assert "EVALUATION ONLY" in text and "NEVER" in text
    rows = yaml.safe_load(text)["rows"]
    assert all(set(r) == {"text", "lang", "crisis", "kind"} for r in rows)
    assert len({r["text"] for r in rows}) == len(rows)
    crisis = [r for r in rows if r["crisis"]]
    kinds = {k: sum(r["kind"] == k for r in crisis) for k in ("plain", "indirect", "obfuscated")}
    assert len(crisis) >= 110 and kinds["plain"] >= len(crisis) * 0.45 and min(kinds.values()) >= len(crisis) * 0.2
    benign = [r for r in rows if not r["crisis"]]
    assert len(benign) >= 110 and all(r["kind"] == "benign_lookalike" for r in benign)
    for part in (crisis, benign):
        assert {r["lang"] for r in part} == {"zh", "en"}


def test_with_hand_off_off_no_turn_is_handed_over_and_the_queue_stays_readable(
    sample_data_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from ragvigil.app import Runtime

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    rt = Runtime(make_settings(data, handoff={"enabled": False}))
    try:
        assert rt.handoffs.stage not in rt.pipeline.stages
        turn = rt.pipeline.run(Turn(message="转人工", kb="default"))
        assert turn.analysis is not None and turn.analysis.intent is not None
        assert turn.analysis.intent.name == "human_request"  # understood, and still not handed over
        assert turn.handoff is None and NOTICE["zh"] not in turn.answer
        assert rt.handoffs.store.list()["total"] == 0
    finally:
        rt.close()


def test_a_turn_reads_its_session_once_and_the_trend_still_sees_earlier_turns(
    sample_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history stage reads the session's messages whole; the hand-off policy looks back at that read."""
    rt = sample_runtime
    reads: list[int] = []
    recent = rt.sessions.recent

    def counted(session_id: str, limit: int, owner: object) -> object:
        reads.append(limit)
        return recent(session_id, limit, owner)  # type: ignore[arg-type]

    monkeypatch.setattr(rt.sessions, "recent", counted)
    first = rt.pipeline.run(Turn(message="I am really angry, this is useless", kb="default", user_id="u1"))
    assert reads == []  # a new session has nothing to read
    angry = ["This is terrible, I hate it", "Still broken, I am furious", "Awful, nothing works, I am so angry"]
    turns = []
    for text in angry:
        turn = rt.pipeline.run(Turn(message=text, kb="default", user_id="u1", session_id=first.session_id))
        turns.append(turn)
    assert len(reads) == len(angry)  # one read per turn, shared by the prompt history and the hand-off policy
    assert reads[0] >= rt.handoffs.policy.look_back
    assert "negative_trend" in rt.handoffs.policy.triggers(turns[-1])
