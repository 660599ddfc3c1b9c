"""The LLM-backed emotion analyzer: a strict parser, and the offline analyzer whenever the model fails."""

from __future__ import annotations

import pytest

from ragvigil.chat.emotion import LLMEmotionAnalyzer, OfflineEmotionAnalyzer, build_emotion_analyzer, parse_verdict
from ragvigil.chat.emotion.llm import VerdictRejected
from ragvigil.chat.understanding import EMOTIONS, POLARITIES
from ragvigil.config import EmotionSettings, OpenAISettings
from ragvigil.providers.openai_compat import OpenAIGenerator
from tests.realservers import RunningServer, free_port


@pytest.fixture(scope="module")
def offline() -> OfflineEmotionAnalyzer:
    return OfflineEmotionAnalyzer.load()


def _generator(url: str, max_tokens: int = 48) -> OpenAIGenerator:
    return OpenAIGenerator(OpenAISettings(base_url=url, model="smollm2", max_tokens=max_tokens, timeout_s=60))  # type: ignore[arg-type]


def test_the_parser_takes_a_verdict_and_only_a_verdict() -> None:
    ok = parse_verdict('```json\n{"label": "fear", "polarity": "negative", "score": -0.5}\n```')
    assert (ok.label, ok.polarity, ok.score) == ("fear", "negative", -0.5)
    assert parse_verdict('{"label": "joy", "polarity": "very_positive", "score": 1}').score == 1.0
    for bad, rule in [
        ("I think the user is sad", "not a JSON object"),
        ('["fear", "negative", -0.5]', "not a JSON object"),
        ('{"label": "melancholy", "polarity": "negative", "score": -0.5}', "unknown label"),
        ('{"label": "fear", "polarity": "bad", "score": -0.5}', "unknown polarity"),
        ('{"label": "fear", "polarity": "negative", "score": "-0.5"}', "score is not a number"),
        ('{"label": "fear", "polarity": "negative", "score": -3}', "score is not a number"),
        ('{"label": "fear", "polarity": "negative", "score": true}', "score is not a number"),
        ('{"label": "fear", "polarity": "negative", "score": 0.7}', "disagree"),
        ('Sure! {"label": "fear", "polarity": "negative", "score": -0.5}', "not a JSON object"),
    ]:
        with pytest.raises(VerdictRejected, match=rule):
            parse_verdict(bad)


def test_a_provider_error_falls_back_to_the_offline_analyzer(offline: OfflineEmotionAnalyzer) -> None:
    dead = _generator(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens: the connection is refused
    analyzer = LLMEmotionAnalyzer(dead, offline, timeout_s=2)
    emotion, source = analyzer.analyze_with_source("气死我了", None, "zh")
    assert source == "fallback:unavailable"
    assert emotion == offline.analyze("气死我了", None, "zh")
    assert analyzer.analyze("气死我了", None, "zh").label == "anger"  # analyze never raises


def test_the_setting_selects_the_llm_analyzer() -> None:
    dead = _generator(f"http://127.0.0.1:{free_port()}/v1")
    assert build_emotion_analyzer(EmotionSettings(analyzer="llm"), dead).name == "llm"


def test_against_a_real_openai_compatible_server(llama: RunningServer, offline: OfflineEmotionAnalyzer) -> None:
    """SmolLM2-135M rarely writes a valid verdict: whichever way it goes, the turn gets a valid emotion."""
    analyzer = LLMEmotionAnalyzer(_generator(llama), offline, timeout_s=60)
    sources = []
    for text in ("I'm so worried about my order", "太棒了，谢谢！"):
        emotion, source = analyzer.analyze_with_source(text, None, "")
        sources.append(source)
        assert emotion.label in EMOTIONS and emotion.polarity in POLARITIES and -1 <= emotion.score <= 1
        if source != "llm":
            assert source.startswith("fallback:") and emotion == offline.analyze(text, None, "")
    assert llama.death() is None, llama.death()
    # a model cut off after 2 tokens cannot have written a verdict: the parser refuses it, offline answers
    short = LLMEmotionAnalyzer(_generator(llama, max_tokens=2), offline, timeout_s=60)
    emotion, source = short.analyze_with_source("I'm so worried about my order", None, "en")
    assert source.startswith("fallback:") and source != "fallback:unavailable"
    assert emotion == offline.analyze("I'm so worried about my order", None, "en")
