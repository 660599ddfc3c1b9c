"""A Generator wrapper that records calls, latency, tokens and time to first token.

One wrapper instead of metrics code inside every provider (house style: no inline metrics).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from ragvigil.ops import metrics
from ragvigil.providers.base import Generation, GenerationRequest, Generator, ProviderError


class MeteredGenerator:
    def __init__(self, inner: Generator, model: str = "") -> None:
        self.inner = inner
        self.name = inner.name
        self.model = model or inner.name

    def _count(self, outcome: str, started: float) -> None:
        metrics.LLM_REQUESTS.labels(self.name, self.model, outcome).inc()
        metrics.LLM_DURATION.labels(self.name).observe(time.perf_counter() - started)

    def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        try:
            out = self.inner.generate(request)
        except ProviderError as exc:
            self._count(exc.kind, started)
            raise
        self._count("ok", started)
        if out.model is None:
            out.model = self.model
        if out.prompt_tokens:
            metrics.LLM_TOKENS.labels(self.name, "prompt").inc(out.prompt_tokens)
        if out.completion_tokens:
            metrics.LLM_TOKENS.labels(self.name, "completion").inc(out.completion_tokens)
        return out

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        started = time.perf_counter()
        first = True
        try:
            for delta in self.inner.stream(request):
                if first:
                    metrics.LLM_FIRST_TOKEN.labels(self.name).observe(time.perf_counter() - started)
                    first = False
                yield delta
        except ProviderError as exc:
            self._count(exc.kind, started)
            raise
        self._count("ok", started)

    def check(self) -> None:
        self.inner.check()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
