"""Builds the chat pipeline of one instance: the stages in the order a turn goes through them.

Why a builder here: the order of the stages and the turn's time budget are chat decisions; a new
stage is one entry in the list below and nothing else changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ragvigil.chat.answer_cache import AnswerCache
from ragvigil.chat.answer_check import AnswerCheck
from ragvigil.chat.handoff.request import HandoffRequest
from ragvigil.chat.history import SessionHistory
from ragvigil.chat.journal import Journal
from ragvigil.chat.pipeline import (
    ChatPipeline,
    FeatureGate,
    Generate,
    LoadHistory,
    Persist,
    RecordContents,
    Retrieve,
    Stage,
)
from ragvigil.chat.safe_mode import SafeMode, SafeModeStage
from ragvigil.chat.sessions import SessionStore
from ragvigil.chat.small_talk import SmallTalk
from ragvigil.chat.turn_writer import TurnWriter
from ragvigil.chat.understand import SmallTalkReply, Understand, Understanding, default_small_talk_reply
from ragvigil.chat.understanding import Intent
from ragvigil.config import Settings
from ragvigil.knowledge.retrieval import HybridRetriever
from ragvigil.knowledge.sentence_vectors import SentenceVectorReader
from ragvigil.ops.message_log import EncryptedMessageLog
from ragvigil.providers.base import Generator

if TYPE_CHECKING:
    from ragvigil.chat.intent import ExampleIntentClassifier
    from ragvigil.chat.intent.vectors import QueryEmbedder


def turn_budget_s(settings: Settings, longest_call_s: float | None = None) -> float:
    """A turn's time budget: the longest provider timeout is its longest legitimate wait, so leave room for it."""
    longest = settings.openai.timeout_s if longest_call_s is None else longest_call_s
    return settings.retrieval.turn_budget_s or max(60.0, longest + 30.0)


def build_understanding(
    settings: Settings, embedder: QueryEmbedder | None = None, generator: Generator | None = None
) -> Understanding:
    """The checkers every turn is understood with: the one place they are plugged in.

    Safety (``chat.safety``), emotion (``chat.emotion``: offline, or the LLM-backed analyzer with the
    offline one behind it) and intent (``chat.intent``: the intents file's examples in the e5 space;
    it needs the query embedder, so without one a runtime has no intent). The runtime exposes them
    as ``rt.safety``, ``rt.emotion`` and ``rt.intents``; replacing one there takes effect on the next
    turn. ``safety.enabled = false`` leaves the turn without a safety verdict (and the canary idle).
    """
    # their lexicons, probes and example vectors load here, not when the pipeline module is imported
    from ragvigil.chat.emotion import build_emotion_analyzer
    from ragvigil.chat.intent import build_intent_classifier
    from ragvigil.chat.safety import SafetyChecker

    safety = SafetyChecker.from_settings(settings.safety) if settings.safety.enabled else None
    emotion = build_emotion_analyzer(settings.emotion, generator)
    intents = build_intent_classifier(settings, embedder) if embedder is not None else None
    understanding = Understanding(safety=safety, emotion=emotion, intent=intents)
    if intents is not None:
        understanding.small_talk_reply = _small_talk_reply(intents)
    return understanding


def _small_talk_reply(intents: ExampleIntentClassifier) -> SmallTalkReply:
    """The intents file's own reply for a small-talk intent, else the built-in short text."""

    def reply(intent: Intent, language: str) -> str | None:
        return intents.reply_for(intent, language) or default_small_talk_reply(intent, language)

    return reply


def build_answer_cache(
    settings: Settings,
    retriever: HybridRetriever,
    generator: Generator,
    paused: Callable[[], bool] | None = None,
) -> AnswerCache | None:
    """The answer cache of this replica (None when ``answer_cache.enabled`` is off).

    Its version of a knowledge base is the catalog's view version and the vector count: a document
    embedded in the background changes what retrieval finds, as an ingest does."""
    ac = settings.answer_cache
    if not ac.enabled:
        return None
    store = retriever.store
    # a vector server's count is a network call: asked at most once a second per knowledge base, not per turn
    count = throttled(store.count, 1.0) if getattr(store, "remote", False) else getattr(store, "count", None)

    routes = getattr(generator, "routes", None)  # the router: its providers in order say who may answer
    names = [getattr(r, "name", "?") for r in routes] if routes else [generator.name]
    is_open = getattr(generator, "is_open", None)

    def version(kb: str) -> tuple[int, int, tuple[str, ...]]:
        # the providers that may answer now: a breaker opened (or forced open by an operator) makes the
        # answers kept from that provider unreachable, as the router would no longer ask it
        callable_now = tuple(n for n in names if not is_open(n)) if is_open is not None else ()
        return retriever.catalog.version(kb), count(kb) if count is not None else 0, callable_now

    return AnswerCache(version, "+".join(names), ac.max_entries, ac.max_bytes, ac.ttl_s, paused=paused)


def throttled(
    fn: Callable[[str], int], every_s: float, clock: Callable[[], float] = time.monotonic
) -> Callable[[str], int]:
    """``fn(key)``, answered from its last result for ``every_s`` seconds after each call."""
    last: dict[str, tuple[float, int]] = {}

    def call(key: str) -> int:
        now = clock()
        seen = last.get(key)
        if seen is not None and now - seen[0] < every_s:
            return seen[1]
        value = fn(key)
        last[key] = (now, value)
        return value

    return call


def build_pipeline(
    settings: Settings,
    sessions: SessionStore,
    history: SessionHistory,
    retriever: HybridRetriever,
    generator: Generator,
    extractive: Generator,
    journal: Journal,
    longest_call_s: float | None = None,
    features: FeatureGate | None = None,
    safe_mode: SafeMode | None = None,
    understanding: Understanding | None = None,
    handoff: Stage | None = None,
    look_back: int = 0,
    sentence_vectors: SentenceVectorReader | None = None,
    turn_writer: TurnWriter | None = None,
    answers_paused: Callable[[], bool] | None = None,
) -> ChatPipeline:
    """The stages in order; ``look_back``: messages the history stage reads whole for later stages (hand-off)."""
    rs = settings.retrieval
    budget_s = turn_budget_s(settings, longest_call_s)
    understanding = understanding if understanding is not None else build_understanding(settings, retriever.embedder)
    safe_texts = {"en": settings.safe_mode.response_en, "zh": settings.safe_mode.response_zh}
    answers = build_answer_cache(settings, retriever, generator, answers_paused)

    def safe_response(language: str) -> str:  # what a failed safety check answers with (fail closed)
        return safe_mode.response(language) if safe_mode is not None else safe_texts.get(language, safe_texts["en"])

    stages: list[Stage] = [
        LoadHistory(history, rs.history_turns, look_back),
        # embeds the message once (retrieval's embedding is then a cache hit); a crisis settles the turn here
        Understand(understanding, retriever.embedder, rs.max_query_chars, safe_response, budget_s=budget_s),
        *([SafeModeStage(safe_mode)] if safe_mode is not None else []),  # settles the turn while on
        Retrieve(retriever, budget_s=budget_s, context_chars=rs.context_chars, features=features, answers=answers),
        SmallTalk(understanding),  # greeting, thanks, chit-chat with nothing relevant found: a friendly reply
        # "转人工" with nothing relevant found: the hand-off notice alone answers (only while hand-off is on)
        *([HandoffRequest()] if handoff is not None else []),
        Generate(generator, extractive, budget_s=budget_s, sentence_vectors=sentence_vectors, answers=answers),
        AnswerCheck(understanding, safe_response),  # also guards a stream, sentence by sentence
        *([handoff] if handoff is not None else []),  # crisis, complaint, human request, trends: to a person
        Persist(sessions, journal, turn_writer),  # concurrent turns committed together
    ]
    if settings.log_message_contents and settings.message_log_key is not None:
        stages.append(
            RecordContents(EncryptedMessageLog(settings.log_dir, settings.message_log_key.get_secret_value()))
        )
    return ChatPipeline(stages, features=features)
