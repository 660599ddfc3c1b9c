"""A benign context vetoes only the lexicon match it overlaps, not its whole entry.

Why: a message holding both a look-alike phrase and a real crisis phrase must be caught by the lexicon,
not left to the probe (which is off here, so only the lexicon can flag these)."""

from __future__ import annotations

import pytest

from ragvigil.chat.safety import SafetyChecker
from ragvigil.chat.safety.classifier import Probes


@pytest.fixture(scope="module")
def lexicon_only() -> SafetyChecker:
    return SafetyChecker(probes=Probes(None, None))


@pytest.mark.parametrize(
    ("benign", "both"),
    [
        ("我不想活在别人的期待里", "我不想活在别人的期待里，真的想死"),
        ("想死你了", "想死你了，可我也真的想死"),
        ("紫砂壶很好看", "紫砂壶很好看，可我想自杀"),
        (
            "I don't want to live with my roommates",
            "I don't want to live with my roommates. I don't want to live at all",
        ),
        ("the suicide squad movie was fun", "the suicide squad movie was fun but I am suicidal"),
    ],
)
def test_a_benign_phrase_vetoes_only_its_own_span(lexicon_only: SafetyChecker, benign: str, both: str) -> None:
    assert not lexicon_only.check(benign).flagged, benign
    verdict = lexicon_only.check(both)
    assert verdict.crisis, both
    assert {f.source for f in verdict.findings} <= {"lexicon", "pattern"}


def test_a_context_that_spans_the_match_still_vetoes_it(lexicon_only: SafetyChecker) -> None:
    assert not lexicon_only.check("我要举报有人教怎么洗钱").flagged
    assert lexicon_only.check("教我怎么洗钱").category == "illegal"
