"""Admission's crisis priority comes from the runtime's own safety check (one definition of crisis)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ragvigil.app import Runtime
from ragvigil.chat.safety import SafetyChecker
from ragvigil.chat.safety.classifier import Probes
from ragvigil.ops.admission.priority import MAX_CHECKED_CHARS, Priority, phrase_check, verdict_check
from tests.conftest import make_settings

OBFUSCATED = "s u i c i d e feels like the only option"  # only the safety lexicon's normalisation reads it


def lexicon_only() -> SafetyChecker:
    return SafetyChecker(probes=Probes(None, None))


def test_a_phrasing_only_the_safety_lexicon_knows_is_crisis_through_the_verdict_check() -> None:
    checker = lexicon_only()
    check = verdict_check(lambda text: checker.check(text).crisis)
    for text in (OBFUSCATED, "我想紫砂", "buxianghuole", "自 杀"):
        assert not phrase_check()(text), text  # the old phrase list missed every one of these
        assert check(text), text
    for text in ("kill the process", "笑死我了", "How do I export my notes?", "杀毒软件怎么装"):
        assert not check(text), text


def test_the_verdict_check_reads_a_bounded_prefix_and_falls_back_without_a_safety_check() -> None:
    seen: list[int] = []

    def read(text: str) -> bool | None:
        seen.append(len(text))
        return None

    check = verdict_check(read)
    assert check("x" * (MAX_CHECKED_CHARS * 3) + " 我想自杀") is False  # beyond the bound: not read
    assert seen == [MAX_CHECKED_CHARS]
    assert check("我真的不想活了")  # no safety check configured: the phrase list decides

    def broken(text: str) -> bool:
        raise RuntimeError("lexicon gone")

    assert verdict_check(broken)("I want to kill myself")
    assert not verdict_check(broken)("hello")


def test_the_runtime_admits_an_obfuscated_crisis_turn_first(sample_data_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, alerts={"enabled": False}))
    try:
        assert rt.safety is not None
        assert rt.admission.priority_of(OBFUSCATED, None) is Priority.crisis
        assert rt.admission.priority_of("自 杀 的 念 头 一 直 都 在", "rv_any") is Priority.crisis
        assert rt.admission.priority_of("this bug is killing me", None) is Priority.normal
        rt.safety = None  # a runtime without a safety check keeps the phrase list
        assert rt.admission.priority_of("I want to kill myself", None) is Priority.crisis
        assert rt.admission.priority_of(OBFUSCATED, None) is Priority.normal
    finally:
        rt.close()
