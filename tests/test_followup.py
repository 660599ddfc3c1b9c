"""The follow-up resolver: which questions lean on the conversation, and what is searched for them."""

from __future__ import annotations

import pytest

from ragvigil.chat.followup import FollowupResolver
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.extractive import NO_ANSWER


@pytest.fixture(scope="module")
def resolver() -> FollowupResolver:
    tokenizer = Tokenizer()
    return FollowupResolver(tokenizer.tokens, max_chars=300)


def chat(*turns: str) -> list[tuple[str, str]]:
    """(role, content) history of user questions, each answered by a placeholder answer."""
    out: list[tuple[str, str]] = []
    for q in turns:
        out += [("user", q), ("assistant", f"answer to {q}")]
    return out


def test_ellipsis_two_turns_back_takes_the_price_question(resolver: FollowupResolver) -> None:
    history = chat("专业版多少钱？", "那学生呢？", "认证有效期多久？")
    r = resolver.resolve("团队版呢？", history, relevant_alone=True)
    assert r.followup and r.reason == "ellipsis"
    assert "团队版多少钱" in r.query  # the slot of the price question, two turns back, filled
    assert "认证" not in r.query  # not the question just before


def test_ellipsis_carries_the_topic_of_the_previous_question(resolver: FollowupResolver) -> None:
    r = resolver.resolve("那学生呢？", chat("专业版多少钱？"), relevant_alone=True)
    assert r.followup and r.reason == "ellipsis"
    assert r.query.startswith("那学生呢？") and "专业版多少钱" in r.query


def test_and_on_mobile_weights_the_new_slot_over_the_frame(resolver: FollowupResolver) -> None:
    r = resolver.resolve("and on mobile?", chat("How do I install the app?"), relevant_alone=True)
    assert r.followup and r.reason == "ellipsis"
    assert r.query.lower().count("mobile") == 2 and "install the app" in r.query


@pytest.mark.parametrize(
    ("history", "question"),
    [
        (("网页剪藏插件怎么安装？",), "它支持哪些浏览器？"),
        (("网页剪藏插件怎么安装？",), "这个授权多久过期？"),
        (("How do I encrypt a notebook?",), "Can I open it on the web?"),
        (("How much storage does the Pro plan include?",), "What is the attachment limit on that plan?"),
    ],
)
def test_a_pronoun_without_antecedent_is_resolved_with_the_topic(
    resolver: FollowupResolver, history: tuple[str, ...], question: str
) -> None:
    r = resolver.resolve(question, chat(*history), relevant_alone=True)
    assert r.followup and r.reason == "pronoun"
    assert r.query.startswith(question) and history[0] in r.query


@pytest.mark.parametrize(
    ("history", "question"),
    [
        (("专业版多少钱？", "那学生呢？"), "怎么开启两步验证？"),
        (("How long do deleted notes stay in the trash?",), "How do I connect Slack?"),
        (("What does sync error E2010 mean?",), "How do I export my notes as PDF?"),
    ],
)
def test_a_new_topic_is_searched_alone(resolver: FollowupResolver, history: tuple[str, ...], question: str) -> None:
    r = resolver.resolve(question, chat(*history), relevant_alone=True)
    assert not r.followup and r.reason == "new topic"
    assert r.query == question


def test_a_question_off_the_knowledge_base_carries_no_topic(resolver: FollowupResolver) -> None:
    """ "明天会下雨吗" answered with the no-answer: the follow-up after it goes back to the plans."""
    history = [*chat("专业版多少钱？"), ("user", "明天会下雨吗"), ("assistant", NO_ANSWER["zh"])]
    r = resolver.resolve("那团队版呢？", history, relevant_alone=True)
    assert r.followup and "团队版多少钱" in r.query and "下雨" not in r.query


def test_a_chain_of_follow_ups_keeps_its_topic(resolver: FollowupResolver) -> None:
    """Earlier follow-ups are resolved too: after "and on mobile?" the Pro plan is still the topic."""
    r = resolver.resolve("how about the price?", chat("How much storage does the Pro plan include?", "and on mobile?"))
    assert r.followup and "Pro plan" in r.query


def test_the_carried_context_is_bounded(resolver: FollowupResolver) -> None:
    long = "专业版" + "很长的问题" * 400 + "多少钱？"
    r = resolver.resolve("那学生呢？", chat(long, long, long, long, long, long), relevant_alone=True)
    assert r.followup and len(r.query) <= 300


def test_first_turn_is_alone(resolver: FollowupResolver) -> None:
    r = resolver.resolve("专业版多少钱？", [], relevant_alone=True)
    assert (r.followup, r.reason, r.query) == (False, "first turn", "专业版多少钱？")


def test_nothing_relevant_alone_is_tried_with_the_topic(resolver: FollowupResolver) -> None:
    r = resolver.resolve("退款要扣手续费吗", chat("专业版年付可以退款吗？"), relevant_alone=False)
    assert r.followup and r.reason == "nothing relevant" and "年付可以退款" in r.query


def test_a_pronoun_with_its_antecedent_in_the_question_stands_alone(resolver: FollowupResolver) -> None:
    """ "If I delete a note, can I restore it?" says what "it" is: the sync topic before stays out."""
    r = resolver.resolve("If I delete a note, can I restore it?", chat("What does sync error E2010 mean?"), True)
    assert not r.followup and r.query == "If I delete a note, can I restore it?"


@pytest.mark.parametrize("question", ["How do I fix it?", "What happens when it is full?", "How long can one be?"])
def test_a_bare_pronoun_leans_on_the_topic(resolver: FollowupResolver, question: str) -> None:
    r = resolver.resolve(question, chat("What does sync error E2031 mean?"), relevant_alone=True)
    assert r.followup and r.reason == "pronoun" and "E2031" in r.query


def test_an_error_code_takes_the_place_of_the_one_asked_before(resolver: FollowupResolver) -> None:
    r = resolver.resolve("What about E2031?", chat("What does sync error E2010 mean?"), relevant_alone=True)
    assert r.followup and r.query.startswith("What about E2031? What does sync error E2031 mean?")
    later = resolver.resolve("How do I fix it?", chat("What does sync error E2010 mean?", "What about E2031?"))
    assert later.followup and "E2031" in later.query and "e2010" not in later.query.lower()
