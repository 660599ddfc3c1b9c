"""What a provider error means for the next step: try again, fail over, mark the key bad, or cut the prompt.

One table instead of ``except`` chains in the router, so every kind has exactly one answer:

============================  =========  ================  =====================================
error                         retry      breaker failure   then
============================  =========  ================  =====================================
429 rate limited              yes [1]_   yes               fail over after the retries
408 / 5xx                     yes [1]_   yes               fail over after the retries
malformed 2xx                 yes        yes               fail over after the retries
timeout                       no         yes               fail over: waiting again doubles the wait
connection refused / reset    no         yes               fail over: a closed port does not reopen in ms
401 / 403                     no         no                mark the key bad, fail over
context too long              no         no                cut the prompt, try once more
other 4xx                     no         no                fail over (the request, not the provider)
============================  =========  ================  =====================================

.. [1] honouring ``Retry-After`` up to ``retry_after_max_s``; a longer wait fails over at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragvigil.providers.base import (
    ProviderContextTooLong,
    ProviderError,
    ProviderKeyRejected,
    ProviderMalformed,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
)


class ProviderSkipped(ProviderError):
    """The router did not call the provider at all (breaker open, at max concurrency, no time left)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Decision:
    retry: bool  # another attempt at the same provider
    failure: bool  # counts against the provider's breaker
    key_bad: bool = False
    trim: bool = False
    wait_s: float | None = None  # the wait the endpoint asked for (Retry-After)


def decide(exc: ProviderError, retry_after_max_s: float) -> Decision:
    if isinstance(exc, ProviderSkipped):
        return Decision(retry=False, failure=False)
    if isinstance(exc, ProviderKeyRejected):
        return Decision(retry=False, failure=False, key_bad=True)
    if isinstance(exc, ProviderContextTooLong):
        return Decision(retry=False, failure=False, trim=True)
    if isinstance(exc, ProviderRateLimited | ProviderServerError):
        wait = exc.asked_wait_s
        return Decision(retry=wait is None or wait <= retry_after_max_s, failure=True, wait_s=wait)
    if isinstance(exc, ProviderMalformed):
        return Decision(retry=True, failure=True)
    if isinstance(exc, ProviderRejected):
        return Decision(retry=False, failure=False)
    return Decision(retry=False, failure=True)  # timeout, refused, anything else
