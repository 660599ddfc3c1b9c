"""Builds the generators of one instance: the extractive one (never fails) and the configured one.

Why a builder here: which generator answers is a provider decision (``settings.generator``); the
runtime and the pipeline only see the ``Generator`` protocol.
"""

from __future__ import annotations

from ragvigil.config import Settings
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.base import Generator
from ragvigil.providers.extractive import ExtractiveGenerator
from ragvigil.providers.metered import MeteredGenerator
from ragvigil.providers.openai_compat import OpenAIGenerator


def build_generation(settings: Settings, tokenizer: Tokenizer) -> tuple[MeteredGenerator, Generator]:
    """``(extractive, generator)``; the generator *is* the extractive one unless an LLM is configured."""
    extractive = MeteredGenerator(ExtractiveGenerator(tokenizer))
    if settings.generator == "openai":
        return extractive, MeteredGenerator(OpenAIGenerator(settings.openai), settings.openai.model)
    return extractive, extractive
