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
    "ProviderContextTooLong",
    "ProviderError",
    "ProviderKeyRejected",
    "ProviderMalformed",
    "ProviderRateLimited",
    "ProviderRefused",
    "ProviderRejected",
    "ProviderServerError",
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

    def __init__(self, message: str = "", http_status: int | None = None, asked_wait_s: float | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status  # the endpoint's HTTP status, when there was one
        self.asked_wait_s = asked_wait_s  # seconds the endpoint asked us to wait (429/503 ``Retry-After``)


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


class ProviderRefused(ProviderUnavailable):
    """The connection itself failed (refused, reset, DNS): the endpoint is not there right now."""


class ProviderServerError(ProviderUnavailable):
    """408 or a 5xx: the endpoint is there but failed this call; another try may work."""


class ProviderRateLimited(ProviderUnavailable):
    """429: the endpoint is there but wants us to slow down (``asked_wait_s`` when it said how long)."""

    kind = "rate_limited"


class ProviderMalformed(ProviderUnavailable):
    """A 2xx whose body is not a chat completion."""

    kind = "malformed"


class ProviderRejected(ProviderError):
    """4xx such as bad key or bad request: retrying the same call will not help."""

    kind = "rejected"
    code = "provider_rejected"


class ProviderKeyRejected(ProviderRejected):
    """401/403: this key is bad (revoked, wrong, out of quota); no call with it will work."""

    kind = "key_rejected"


class ProviderContextTooLong(ProviderRejected):
    """The prompt is longer than the model's context window: a shorter prompt may work."""

    kind = "context_too_long"


class Generator(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> Iterator[str]: ...

    def check(self) -> None:
        """Raise ProviderError when the generator cannot answer now."""
