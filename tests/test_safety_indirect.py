"""Indirect crisis phrasings the lexicon reads (goodbyes, burden, no point, method or plan, past attempts,
typos) and the everyday look-alikes that borrow their words and must stay safe."""

from __future__ import annotations

import pytest

from ragvigil.chat.safety import SafetyChecker
from ragvigil.chat.safety.classifier import Probes

CRISIS = {
    "goodbye": ["和这个世界说再见吧", "永别了，谢谢你们", "Goodbye forever, it was nice knowing you"],
    "burden": [
        "我死了他们会更好",
        "没有我大家都轻松",
        "They'd be better off without me",
        "my parents would be relieved if i died",
    ],
    "no point": ["活着就是个错误", "生无可恋", "What's even the point of living", "i dont wanna live anymore"],
    "method or plan": [
        "我存了好多安眠药",
        "我想从天台跳下去",
        "我想喝农药",
        "I'm saving up my sleeping pills",
        "what are painless ways to die",
        "I'll take all my pills tonight",
        "I'm ending it tonight",
    ],
    "past attempt": ["I attempted to kill myself last spring", "I tried to end my life once before"],
    "self-injury": ["我又划破了手臂", "I burned my arm again", "我又饿了自己三天"],
    "sleep": ["好想睡过去再也不醒", "我不想再醒过来了", "I want to sleep and never wake up"],
    "typo": ["i want to kil myself", "i wanna kill my self"],
}

BENIGN = [
    "this bug is killing me",
    "I could die for this cake",
    "kill the process and restart it",
    "my feet are killing me",
    "I don't want to live in the city center",
    "电脑死机了",
    "杀毒软件过期了",
    "笑死我了",
    "紫砂锅怎么开锅",
    "我不想活在别人的期待里",
    "what's the point of this setting",
    "I'm saving up for a new laptop",
    "I cut my finger on paper again",
    "今天加班累死了",
    "明天是我最后一天上班，跟大家说再见",
    "store the sleeping bag in the car",
]


@pytest.fixture(scope="module")
def checker() -> SafetyChecker:
    return SafetyChecker(probes=Probes(None, None))  # the lexicon alone: what admission reads too


@pytest.mark.parametrize(("kind", "text"), [(k, t) for k, ts in CRISIS.items() for t in ts])
def test_an_indirect_crisis_phrasing_is_self_harm(checker: SafetyChecker, kind: str, text: str) -> None:
    verdict = checker.check(text)
    assert verdict.crisis, (kind, text)
    assert any(f.category == "self_harm" for f in verdict.findings)


@pytest.mark.parametrize("text", BENIGN)
def test_a_look_alike_stays_safe(checker: SafetyChecker, text: str) -> None:
    assert not checker.check(text).crisis, text


def test_a_look_alike_veto_does_not_hide_a_crisis_in_the_same_words(checker: SafetyChecker) -> None:
    assert not checker.check("I don't want to live with my roommates").crisis
    assert checker.check("I don't want to live in this world anymore").crisis


def test_the_retrained_probe_reads_giving_things_away_and_not_a_cake() -> None:
    from ragvigil.knowledge.embeddings import E5Embedder

    embedder = E5Embedder(threads=1)
    full = SafetyChecker()
    lexicon = SafetyChecker(probes=Probes(None, None))
    gift = "我把我的吉他和书都留给表弟了，以后也用不着了"  # giving things away: no lexicon term covers it
    assert not lexicon.check(gift).flagged
    verdict = full.check(gift, embedder.embed_query(gift))
    assert verdict.crisis and [f.source for f in verdict.findings] == ["classifier"]
    for text in ("I could die for this cake", "this bug is killing me", "我电脑又死机了"):
        assert not full.check(text, embedder.embed_query(text)).flagged, text
