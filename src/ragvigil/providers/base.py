"""The Generator interface and the typed errors callers branch on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ragvigil.knowledge.retrieval import Hit


class ProviderError(Exception):
    """A generator could not produce an answer; ``status`` is the HTTP status when there was one."""

    kind = "error"

    def __init__(self, message: str = "", status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds the endpoint asked us to wait (429/503 ``Retry-After``)


class ProviderTimeout(ProviderError):
    kind = "timeout"


class ProviderUnavailable(ProviderError):
    """Connection refused, DNS failure, 5xx: worth failing over."""

    kind = "unavailable"


class ProviderRefused(ProviderUnavailable):
    """The connection itself failed (refused, reset, DNS): the endpoint is not there right now."""


class ProviderServerError(ProviderUnavailable):
    """408 or a 5xx: the endpoint is there but failed this call; another try may work."""


class ProviderRateLimited(ProviderUnavailable):
    """429: the endpoint is there but wants us to slow down (``retry_after`` when it said how long)."""

    kind = "rate_limited"


class ProviderMalformed(ProviderUnavailable):
    """A 2xx whose body is not a chat completion."""

    kind = "malformed"


class ProviderRejected(ProviderError):
    """4xx such as bad key or bad request: retrying the same call will not help."""

    kind = "rejected"


class ProviderKeyRejected(ProviderRejected):
    """401/403: this key is bad (revoked, wrong, out of quota); no call with it will work."""

    kind = "key_rejected"


class ProviderContextTooLong(ProviderRejected):
    """The prompt is longer than the model's context window: a shorter prompt may work."""

    kind = "context_too_long"


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
    degraded_reason: str | None = None  # set by the router when a fallback answered: why the preferred ones did not


class Generator(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> Iterator[str]: ...

    def check(self) -> None:
        """Raise ProviderError when the generator cannot answer now."""
