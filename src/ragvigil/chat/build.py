"""Builds the chat pipeline of one instance: the stages in the order a turn goes through them.

Why a builder here: the order of the stages and the turn's time budget are chat decisions; a new
stage is one entry in the list below and nothing else changes.
"""

from __future__ import annotations

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
from ragvigil.config import Settings
from ragvigil.knowledge.retrieval import HybridRetriever
from ragvigil.ops.message_log import EncryptedMessageLog
from ragvigil.providers.base import Generator


def turn_budget_s(settings: Settings, longest_call_s: float | None = None) -> float:
    """A turn's time budget: the longest provider timeout is its longest legitimate wait, so leave room for it."""
    longest = settings.openai.timeout_s if longest_call_s is None else longest_call_s
    return settings.retrieval.turn_budget_s or max(60.0, longest + 30.0)


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
) -> ChatPipeline:
    rs = settings.retrieval
    budget_s = turn_budget_s(settings, longest_call_s)
    stages: list[Stage] = [
        LoadHistory(history, rs.history_turns),
        *([SafeModeStage(safe_mode)] if safe_mode is not None else []),  # settles the turn while on
        Retrieve(retriever, budget_s=budget_s, context_chars=rs.context_chars, features=features),
        Generate(generator, extractive, budget_s=budget_s),
        Persist(sessions, journal),
    ]
    if settings.log_message_contents and settings.message_log_key is not None:
        stages.append(
            RecordContents(EncryptedMessageLog(settings.log_dir, settings.message_log_key.get_secret_value()))
        )
    return ChatPipeline(stages, features=features)
