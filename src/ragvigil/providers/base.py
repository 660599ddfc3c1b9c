"""The Generator interface and the typed errors callers branch on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ragvigil.knowledge.retrieval import Hit


class ProviderError(Exception):
    """A generator could not produce an answer."""

    kind = "error"


class ProviderTimeout(ProviderError):
    kind = "timeout"


class ProviderUnavailable(ProviderError):
    """Connection refused, DNS failure, 5xx: worth failing over."""

    kind = "unavailable"


class ProviderRejected(ProviderError):
    """4xx such as bad key or bad request: retrying the same call will not help."""

    kind = "rejected"


@dataclass
class GenerationRequest:
    question: str
    passages: list[Hit]  # relevant passages only, in citation order ([1] is passages[0])
    history: list[tuple[str, str]] = field(default_factory=list)  # (role, content), oldest first
    language: str = "en"
    timeout_s: float | None = None  # what is left of the turn's budget: a remote generator waits no longer


@dataclass
class Generation:
    text: str
    provider: str
    cited: list[int] = field(default_factory=list)  # 1-based indexes into passages
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None  # the model asked (set by MeteredGenerator), for the trace's GenAI attributes


class Generator(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> Iterator[str]: ...

    def check(self) -> None:
        """Raise ProviderError when the generator cannot answer now."""
