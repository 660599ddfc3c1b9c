"""The Generator interface and the typed errors callers branch on.

Light on purpose: a provider, the router or a test imports this without the retrieval stack
(the request and answer types live in ``ragvigil.types``; they are re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ragvigil.errors import RagvigilError
from ragvigil.types import Generation, GenerationRequest, Hit

__all__ = [
    "Generation",
    "GenerationRequest",
    "Generator",
    "Hit",
    "ProviderError",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
]


class ProviderError(RagvigilError):
    """A generator could not produce an answer.

    The chat pipeline answers with the fallback instead, so the API shows these only where a caller
    asks a provider directly; the message is fixed there (the exception's text may name an endpoint).
    """

    kind = "error"
    status = 502
    code = "provider_error"
    message_template = "the answer provider failed; try again shortly"


class ProviderTimeout(ProviderError):
    kind = "timeout"
    status = 503
    code = "provider_timeout"
    retry_after = 5


class ProviderUnavailable(ProviderError):
    """Connection refused, DNS failure, 5xx: worth failing over."""

    kind = "unavailable"
    status = 503
    code = "provider_unavailable"
    retry_after = 5


class ProviderRejected(ProviderError):
    """4xx such as bad key or bad request: retrying the same call will not help."""

    kind = "rejected"
    code = "provider_rejected"


class Generator(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> Iterator[str]: ...

    def check(self) -> None:
        """Raise ProviderError when the generator cannot answer now."""
