"""The offline emotion analyzer: committed weights load, clear turns in both languages, the ordered scale."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ragvigil.chat.emotion import OfflineEmotionAnalyzer, build_emotion_analyzer, polarity_of
from ragvigil.chat.emotion.lexicon import Lexicon
from ragvigil.chat.emotion.offline import WEIGHTS_DIR
from ragvigil.chat.understanding import EMOTIONS, POLARITIES
from ragvigil.config import EmotionSettings
from ragvigil.knowledge.embeddings import E5Embedder


@pytest.fixture(scope="module")
def embedder() -> Iterator[E5Embedder]:
    yield E5Embedder(threads=1)


@pytest.fixture(scope="module")
def analyzer() -> OfflineEmotionAnalyzer:
    return OfflineEmotionAnalyzer.load()


def test_committed_weights_load_and_name_their_data(analyzer: OfflineEmotionAnalyzer) -> None:
    assert analyzer.polarity.labels == ("negative", "neutral", "positive")
    assert set(analyzer.category.labels) == set(EMOTIONS)
    assert analyzer.polarity.dim == analyzer.category.dim == 384  # the e5 query vector a turn carries
    assert analyzer.combiner.dim == 3
    assert len(analyzer.ngrams.weights) > 1000
    for part in (analyzer.polarity, analyzer.combiner):
        sources = part.meta["sources"]
        assert "ChnSentiCorp (htl_all)" in sources and "research use" in sources["ChnSentiCorp (htl_all)"]
        assert "team-written exemplars" in sources
    assert "ChnSentiCorp (htl_all)" in analyzer.ngrams.meta["sources"]
    assert not any("vader" in str(p.meta).lower() for p in (analyzer.polarity, analyzer.category, analyzer.combiner))
    assert {p.name for p in WEIGHTS_DIR.glob("*.npz")} == {
        "polarity.npz",
        "category.npz",
        "zh_ngrams.npz",
        "combiner.npz",
        "polarity_zh.npz",
        "combiner_zh.npz",
    }


@pytest.mark.parametrize(
    ("text", "label", "side"),
    [
        ("我好难过", "sadness", "negative"),
        ("太棒了，谢谢！", "joy", "positive"),
        ("气死我了", "anger", "negative"),
        ("I'm so worried about my order", "fear", "negative"),
        ("ok", "neutral", "neutral"),
        ("这家酒店房间干净，服务热情，下次还住", "joy", "positive"),
        ("This is the worst support I have ever had", "anger", "negative"),
    ],
)
def test_clear_turns_get_their_side_and_category(
    analyzer: OfflineEmotionAnalyzer, embedder: E5Embedder, text: str, label: str, side: str
) -> None:
    emotion = analyzer.analyze(text, embedder.embed_query(text), "")
    assert emotion.polarity in POLARITIES and -1.0 <= emotion.score <= 1.0
    assert emotion.polarity.endswith(side), emotion
    if label != "anger" or emotion.label != "disgust":  # "worst support" may read as disgust; both are negative
        assert emotion.label == label, emotion


def test_the_five_steps_are_ordered_by_the_score() -> None:
    scores = [-1.0, -0.7, -0.6, -0.59, -0.3, -0.2, -0.19, 0.0, 0.19, 0.2, 0.59, 0.6, 1.0]
    steps = [POLARITIES.index(polarity_of(s)) for s in scores]
    assert steps == sorted(steps)
    assert [polarity_of(s) for s in (-0.9, -0.4, 0.0, 0.4, 0.9)] == list(POLARITIES)


def test_intensity_and_strength_move_a_turn_further_out(analyzer: OfflineEmotionAnalyzer, embedder: E5Embedder) -> None:
    def score(text: str) -> float:
        return analyzer.analyze(text, embedder.embed_query(text), "").score

    assert (
        score("这是我住过最差的酒店，脏乱差，太恶心了，再也不来了") < score("房间有点小") < score("房间很干净，还不错")
    )
    very = analyzer.analyze("太棒了，完美！非常非常满意！", embedder.embed_query("太棒了，完美！非常非常满意！"), "")
    assert very.polarity == "very_positive", very


def test_without_a_vector_the_lexicon_and_ngrams_still_answer(analyzer: OfflineEmotionAnalyzer) -> None:
    assert analyzer.analyze("气死我了", None, "zh").polarity.endswith("negative")
    assert analyzer.analyze("气死我了", None, "zh").label == "anger"
    assert analyzer.analyze("好的", None, "zh").polarity == "neutral"


def test_lexicon_negation_flips_and_longest_match_wins() -> None:
    lexicon = Lexicon.load()
    assert lexicon.read("开心").valence > 0 > lexicon.read("我不开心").valence
    assert lexicon.read("房间不错").valence > 0  # 不错 is one word, not 不 + 错
    assert lexicon.read("not good at all").valence < 0 < lexicon.read("good").valence
    assert lexicon.read("I am so happy").intense and not lexicon.read("I am happy").intense
    assert lexicon.read("我不开心").cues.get("joy") is None  # a negated cue names no emotion


def test_the_setting_selects_the_offline_analyzer_by_default() -> None:
    assert build_emotion_analyzer(EmotionSettings()).name == "offline"
    assert build_emotion_analyzer(EmotionSettings(analyzer="llm")).name == "offline"  # no generator: offline
