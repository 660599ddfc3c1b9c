"""Builds the generators of one instance: the extractive one (never fails) and the provider router.

Why a builder here: which provider answers is a provider decision (``settings.providers``, or the
older ``generator``/``openai`` pair); the runtime and the pipeline only see the ``Generator`` protocol.
"""

from __future__ import annotations

from collections.abc import Callable

from ragvigil.config import Settings
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.base import Generator
from ragvigil.providers.extractive import ExtractiveGenerator
from ragvigil.providers.metered import MeteredGenerator
from ragvigil.providers.router import ProviderRouter, build_router


def build_generation(
    settings: Settings, tokenizer: Tokenizer, wrap: Callable[[Generator], Generator] | None = None
) -> tuple[MeteredGenerator, ProviderRouter]:
    """``(extractive, router)``: the providers in order, each behind its breaker, ``extractive`` last.

    ``wrap`` is put around each remote provider's client (fault injection's ``provider:<name>`` hooks).
    """
    extractive = MeteredGenerator(ExtractiveGenerator(tokenizer))
    return extractive, build_router(settings, extractive, wrap=wrap)
