"""The safety canary's runs: the shipped probes through a safety check, each failure mode a failing run.

A missed crisis probe, a flagged benign one, an unsafe answer let through or a caring one flagged by the
answer check, a check that raises or hangs: each makes the run fail
(``ragvigil_safety_canary_passing`` 0, the runs counter by outcome, the probe's id as the reason and
never its text), and a hung check never starts a second worker. Before the first run the gauge is absent.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from ragvigil.chat.understanding import SAFE, SafetyVerdict
from ragvigil.config import Settings
from ragvigil.ops import metrics
from ragvigil.ops.canary import (
    CanaryProbesInvalid,
    SafetyCanary,
    build_canary,
    load_probes,
    outcome_of,
    parse_probes,
    probe_outcome,
)
from tests.safety_check import RuleSafetyCheck


def real_check() -> object:
    """The safety check the runtime builds by default (its shipped lexicon and classifier files)."""
    from ragvigil.chat.safety import SafetyChecker

    return SafetyChecker.from_settings(Settings(_env_file=None).safety)  # type: ignore[call-arg]


PROBES = load_probes()
MESSAGES = [p for p in PROBES if p.check == "input"]
ANSWERS = [p for p in PROBES if p.check == "output"]


def passing() -> float | None:
    return metrics.REGISTRY.get_sample_value("ragvigil_safety_canary_passing")


def runs(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("ragvigil_safety_canary_runs_total", {"outcome": outcome}) or 0.0


def canary(check: object, **kw: object) -> SafetyCanary:
    return SafetyCanary(lambda: check, PROBES, **kw)  # type: ignore[arg-type, return-value]


@pytest.fixture(autouse=True)
def _absent() -> None:
    metrics.SAFETY_CANARY.set(None)  # every test starts with no signal, as a process does


def test_the_shipped_probes_cover_crisis_and_benign_in_both_languages() -> None:
    assert {(p.expect, p.lang) for p in MESSAGES} == {
        ("crisis", "zh"),
        ("crisis", "en"),
        ("clear", "zh"),
        ("clear", "en"),
    }


def test_the_shipped_probes_cover_unsafe_and_caring_answers_in_both_languages() -> None:
    assert {(p.expect, p.lang) for p in ANSWERS} == {
        ("flagged", "zh"),
        ("flagged", "en"),
        ("clear", "zh"),
        ("clear", "en"),
    }


def test_the_decision_is_the_pipelines_rule() -> None:
    check = RuleSafetyCheck()
    assert probe_outcome(check, "我不想活了") == "crisis"  # type: ignore[arg-type]
    assert probe_outcome(check, "How do I export my notes?") == "clear"  # type: ignore[arg-type]
    assert outcome_of(SafetyVerdict("violence", "high")) == "flagged"
    assert outcome_of(SAFE) == "clear"


def test_a_working_check_passes_and_the_gauge_is_absent_until_then() -> None:
    c = canary(RuleSafetyCheck())
    assert passing() is None  # before the first run: neither passing nor failing
    before = runs("pass")
    run = c.run_once()
    assert run is not None and run.passed and run.failures == []
    assert passing() == 1.0 and runs("pass") == before + 1
    status = c.status()
    assert (
        status["passing"] is True and status["last_failure"] is None and status["probes"] == {"crisis": 4, "clear": 4}
    )
    assert status["answer_probes"] == {"flagged": 2, "clear": 2}


def test_the_real_safety_check_passes_the_shipped_probes_answers_included() -> None:
    run = canary(real_check()).run_once()
    assert run is not None and run.passed, run.failures


def test_an_answer_check_that_lets_unsafe_answers_through_fails_the_run() -> None:
    """The input check still perfect, the output check wired off: only the answer probes can notice."""

    class OutputOff:
        def __init__(self) -> None:
            self.inner = real_check()

        def check(self, text: str, vector: object = None) -> SafetyVerdict:
            return self.inner.check(text, vector)  # type: ignore[arg-type]

        def check_output(self, text: str) -> SafetyVerdict:
            return SAFE

        def response(self, verdict: SafetyVerdict, language: str) -> str:
            return self.inner.response(verdict, language)

        def replacement(self, verdict: SafetyVerdict, language: str) -> str:
            return self.inner.replacement(verdict, language)

    before = runs("missed")
    run = canary(OutputOff()).run_once()
    assert run is not None and run.outcome == "missed" and passing() == 0.0
    assert run.failures == [
        {"probe": "answer-unsafe-zh-1", "reason": "missed", "detail": "answer clear"},
        {"probe": "answer-unsafe-en-1", "reason": "missed", "detail": "answer clear"},
    ]
    assert runs("missed") == before + 1


def test_an_answer_check_that_flags_a_caring_answer_fails_the_run() -> None:
    class Strict(RuleSafetyCheck):
        def check_output(self, text: str) -> SafetyVerdict:  # a new output rule catching the hotline text
            return SafetyVerdict("self_harm", "high") if "热线" in text else super().check_output(text)

    run = canary(Strict()).run_once()
    assert run is not None and run.outcome == "flagged"
    assert run.failures == [{"probe": "answer-caring-zh-1", "reason": "flagged", "detail": "answer flagged"}]


def test_an_answer_check_that_raises_fails_the_run() -> None:
    class Broken(RuleSafetyCheck):
        def check_output(self, text: str) -> SafetyVerdict:
            raise RuntimeError("output lexicon not loaded")

    run = canary(Broken()).run_once()
    assert run is not None and run.outcome == "error"
    assert {f["probe"] for f in run.failures} == {p.id for p in ANSWERS}
    assert {f["detail"] for f in run.failures} == {"RuntimeError"}


def test_a_missed_crisis_probe_fails_the_run_naming_the_probe_not_its_text() -> None:
    check = RuleSafetyCheck(words=("自杀", "不想活"))  # the English crisis words lost
    c = canary(check)
    before = runs("missed")
    run = c.run_once()
    assert run is not None and run.outcome == "missed" and not run.passed
    # the stand-in checks answers with the same words: the English unsafe answer goes through as well
    assert {f["probe"] for f in run.failures} == {"crisis-en-1", "crisis-en-2", "answer-unsafe-en-1"}
    assert passing() == 0.0 and runs("missed") == before + 1
    shown = json.dumps(c.status(), ensure_ascii=False)
    assert "crisis-en-1" in shown and c.status()["last_failure"]["outcome"] == "missed"
    for p in PROBES:
        assert p.text not in shown  # never the content


def test_a_flagged_benign_probe_fails_the_run() -> None:
    c = canary(RuleSafetyCheck(flag_words=("退款",)))
    run = c.run_once()
    assert run is not None and run.outcome == "flagged"
    assert run.failures == [{"probe": "benign-zh-1", "reason": "flagged", "detail": "decided flagged"}]
    assert passing() == 0.0


def test_a_check_that_raises_fails_the_run() -> None:
    class Broken(RuleSafetyCheck):
        def check(self, text: str, vector: object = None) -> SafetyVerdict:
            raise OSError("lexicon file vanished")

    before = runs("error")
    run = canary(Broken()).run_once()
    assert run is not None and run.outcome == "error"
    assert {f["detail"] for f in run.failures} == {"OSError"} and len(run.failures) == len(PROBES)
    assert passing() == 0.0 and runs("error") == before + 1


def test_recovery_sets_the_gauge_back_to_passing() -> None:
    check = RuleSafetyCheck(words=())
    c = canary(check)
    assert c.run_once().outcome == "missed" and passing() == 0.0  # type: ignore[union-attr]
    check.words = RuleSafetyCheck().words
    assert c.run_once().passed and passing() == 1.0  # type: ignore[union-attr]
    assert c.status()["last_failure"]["outcome"] == "missed"  # the last failure is kept for the operator


def test_a_hung_check_fails_by_timeout_and_never_stacks_workers() -> None:
    release = threading.Event()

    class Hung(RuleSafetyCheck):
        def check(self, text: str, vector: object = None) -> SafetyVerdict:
            release.wait(30)
            return super().check(text, vector)

    c = canary(Hung(), timeout_s=0.2)
    try:
        first = c.run_once()
        assert first is not None and first.outcome == "timeout" and first.failures[0]["probe"] == PROBES[0].id
        second = c.run_once()  # the first worker is still stuck: no second one
        assert second is not None and second.outcome == "timeout" and second.failures[0]["reason"] == "still_running"
        workers = [t for t in threading.enumerate() if t.name == "safety-canary-probes"]
        assert len(workers) == 1 and passing() == 0.0
    finally:
        release.set()
    workers[0].join(10)
    c.timeout_s = 10
    assert c.run_once().passed  # type: ignore[union-attr]  # the stuck worker ended: a fresh run starts


def test_the_probes_are_checked_with_their_query_vectors_embedded_once() -> None:
    embedded: list[str] = []

    def embed(text: str) -> np.ndarray:
        embedded.append(text)
        return np.full(4, len(embedded), dtype=np.float32)

    check = RuleSafetyCheck()
    c = canary(check, embed=embed)
    c.run_once()
    c.run_once()
    assert len(embedded) == len(MESSAGES)  # fixed probes: embedded at the first run only; answers never
    answers = {p.text for p in ANSWERS}
    assert all(v is not None for t, v in check.calls if t not in answers)
    assert all(v is None for t, v in check.calls if t in answers)  # an answer is checked as sent: no vector
    assert len(check.calls) == 2 * len(PROBES)


def test_no_safety_check_gives_no_signal() -> None:
    c = SafetyCanary(lambda: None, PROBES)
    assert c.run_once() is None and passing() is None
    assert c.status()["check"] is None and c.status()["passing"] is None


def test_stopping_a_started_canary_makes_the_gauge_absent_again() -> None:
    c = canary(RuleSafetyCheck(), interval_s=3600)
    c.run_once()
    c.start()
    c.stop()
    assert passing() is None


def test_a_bad_probe_file_names_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "probes.yaml"
    bad.write_text(
        "probes:\n"
        "  - {id: a, lang: fr, expect: crisis, text: x}\n"
        "  - {id: a, lang: en, expect: maybe, text: ''}\n"
        "  - {id: b, lang: en, expect: clear, text: hi, extra: 1}\n",
        encoding="utf-8",
    )
    with pytest.raises(CanaryProbesInvalid) as err:
        load_probes(bad)
    problems = err.value.problems
    assert any("probes[0]: lang" in p for p in problems)
    assert any("probes[1]: id 'a' used twice" in p for p in problems)
    assert any("probes[1]: expect" in p for p in problems) and any("probes[1]: text" in p for p in problems)
    assert any("probes[2]: unknown field 'extra'" in p for p in problems)
    with pytest.raises(CanaryProbesInvalid, match="expect: clear"):
        parse_probes("probes:\n  - {id: a, lang: en, expect: crisis, text: help}\n")


def test_answer_probes_are_validated_with_their_own_decisions() -> None:
    with pytest.raises(CanaryProbesInvalid) as err:
        parse_probes(
            "probes:\n"
            "  - {id: a, lang: en, expect: crisis, text: help}\n"
            "  - {id: b, lang: en, expect: clear, text: hi}\n"
            "  - {id: c, check: output, lang: en, expect: crisis, text: x}\n"
            "  - {id: d, check: answer, lang: en, expect: flagged, text: y}\n"
        )
    assert err.value.problems == [
        "probes[2]: expect of a check: output probe must be one of flagged, clear",
        "probes[3]: check must be one of input, output",
    ]
    # answers alone are not enough: the messages of both kinds are still needed
    with pytest.raises(CanaryProbesInvalid, match="expect: crisis"):
        parse_probes("probes:\n  - {id: a, check: output, lang: en, expect: flagged, text: x}\n")


def test_the_probe_file_setting_replaces_the_shipped_probes(tmp_path: Path) -> None:
    f = tmp_path / "probes.yaml"
    f.write_text(
        "probes:\n  - {id: c1, lang: en, expect: crisis, text: i want to end my life}\n"
        "  - {id: b1, lang: en, expect: clear, text: thanks}\n",
        encoding="utf-8",
    )
    settings = Settings(_env_file=None, data_dir=tmp_path, canary={"probes_file": f, "interval_s": 2})  # type: ignore[call-arg]
    c = build_canary(settings, lambda: RuleSafetyCheck())  # type: ignore[arg-type, return-value]
    assert c is not None and [p.id for p in c.probes] == ["c1", "b1"] and c.interval_s == 2
    assert c.run_once().passed  # type: ignore[union-attr]
    off = Settings(_env_file=None, data_dir=tmp_path, canary={"enabled": False})  # type: ignore[call-arg]
    assert build_canary(off, lambda: None) is None
