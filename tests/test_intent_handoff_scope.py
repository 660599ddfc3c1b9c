"""A factual question is not a complaint: a hand-off intent needs a turn close to one of its own examples.

Why: "为什么时人强烈反感高英叔侄？" (a history question) passed the file's out-of-scope threshold and the vote
leaned to ``complaint``, so a person was queued for it. Real complaints and requests for a person still hand off.
"""

from __future__ import annotations

import pytest

from ragvigil.chat.intent import DEFAULT_FILE, ExampleIntentClassifier, load_file
from ragvigil.knowledge.embeddings import E5Embedder


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExampleIntentClassifier, E5Embedder]:
    e5 = E5Embedder()
    return ExampleIntentClassifier(load_file(DEFAULT_FILE), e5, tmp_path_factory.mktemp("iv") / "v.npz"), e5


@pytest.mark.parametrize(
    "text",
    [
        "为什么时人强烈反感高英叔侄？",
        "对亚硫酸盐过敏的反应表现为什么？",
        "乡里组织什么时候开始瓦解的？",
        "城巴A22线为哪些地方提供服务？",
        "越南投资发展银行主要提供什么服务？",
        "林永康离职前，是做什么工作的？",
    ],
)
def test_a_factual_question_is_not_handed_off(default: tuple[ExampleIntentClassifier, E5Embedder], text: str) -> None:
    clf, e5 = default
    intent = clf.classify(text, e5.embed_query(text), "zh")
    assert intent.action != "handoff", intent


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("你们太不负责任了，我很失望", "complaint"),
        ("This is the worst support I've ever had", "complaint"),
        ("找个真人客服跟我说话", "human_request"),
        ("put me through to an operator", "human_request"),
    ],
)
def test_a_real_complaint_or_request_still_hands_off(
    default: tuple[ExampleIntentClassifier, E5Embedder], text: str, name: str
) -> None:
    clf, e5 = default
    intent = clf.classify(text, e5.embed_query(text), "zh")
    assert (intent.name, intent.action) == (name, "handoff")


def test_the_rule_is_the_classifiers_setting(default: tuple[ExampleIntentClassifier, E5Embedder]) -> None:
    clf, e5 = default
    text = "为什么时人强烈反感高英叔侄？"
    loose = ExampleIntentClassifier(clf.intents, None, vectors=clf.example_vectors, handoff_min_similarity=0.0)
    assert loose.classify(text, e5.embed_query(text), "zh").name == "complaint"  # what the old rule did
