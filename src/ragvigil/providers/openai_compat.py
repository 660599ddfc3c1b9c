"""Any OpenAI-compatible chat completions endpoint (OpenAI, DashScope, DeepSeek, vLLM, llama.cpp...)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import httpx

from ragvigil.config import OpenAISettings
from ragvigil.providers.base import (
    Generation,
    GenerationRequest,
    ProviderContextTooLong,
    ProviderError,
    ProviderKeyRejected,
    ProviderMalformed,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderServerError,
    ProviderTimeout,
)

SYSTEM_RULES = {
    "en": (
        "You are a customer support assistant. Answer only from the numbered passages below. "
        "Cite passages as [n]. If the passages do not contain the answer, say you do not know "
        "and offer to hand over to a person. Never invent prices, dates or policies."
    ),
    "zh": (
        "你是客服助手。只根据下面编号的资料回答，并用 [n] 标注引用。"
        "资料里没有答案时，直接说明不知道，并建议转人工客服。不要编造价格、日期或政策。"
    ),
}


def build_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """System rules + retrieved passages + recent history + the question."""
    lang = "zh" if request.language == "zh" else "en"
    passages = "\n\n".join(
        f"[{i}] {h.title}{' > ' + h.anchor if h.anchor and h.anchor != h.title else ''}\n{h.text}"
        for i, h in enumerate(request.passages, 1)
    )
    system = SYSTEM_RULES[lang] + "\n\n" + (passages or "(no passages found)")
    messages = [{"role": "system", "content": system}]
    messages += [{"role": role, "content": content} for role, content in request.history]
    messages.append({"role": "user", "content": request.question})
    return messages


class OpenAIGenerator:
    """One client per endpoint with explicit timeouts; errors mapped to the provider hierarchy."""

    def __init__(self, settings: OpenAISettings, name: str = "openai") -> None:
        self.settings = settings
        self.name = name
        headers = {}
        key = settings.api_key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=settings.base_url.get_secret_value().rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s)),
        )

    def _payload(self, request: GenerationRequest, stream: bool) -> dict[str, object]:
        return {
            "model": self.settings.model,
            "messages": build_messages(request),
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
            "stream": stream,
        }

    def generate(self, request: GenerationRequest) -> Generation:
        with self._call():
            resp = self._client.post(
                "/chat/completions", json=self._payload(request, False), timeout=self._timeout(request)
            )
            self._raise_for(resp)
            data = resp.json()
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderMalformed(f"{self.name}: malformed response: {str(data)[:200]}") from exc
        usage = data.get("usage") or {}
        return Generation(
            text.strip(),
            self.name,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Deltas as they come; a stream still dripping when the turn's time is up ends in ``ProviderTimeout``.

        httpx's read timeout is per read, so without the deadline a slow stream could run for ever.
        """
        deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
        with (
            self._call(),
            self._client.stream(
                "POST", "/chat/completions", json=self._payload(request, True), timeout=self._timeout(request)
            ) as resp,
        ):
            if resp.status_code >= 400:
                resp.read()
                self._raise_for(resp)
            for line in resp.iter_lines():
                if deadline is not None and time.monotonic() > deadline:  # keep-alive lines count too
                    raise ProviderTimeout(f"{self.name}: the stream outlasted the turn's time left")
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    delta = json.loads(payload)["choices"][0].get("delta", {}).get("content")
                except (ValueError, KeyError, IndexError) as exc:
                    raise ProviderMalformed(f"{self.name}: malformed stream chunk") from exc
                if delta:
                    yield delta

    def _timeout(self, request: GenerationRequest) -> httpx.Timeout:
        """The configured timeout, shortened to what is left of the turn's budget."""
        if request.timeout_s is None or request.timeout_s >= self.settings.timeout_s:
            return self._client.timeout
        t = max(request.timeout_s, 0.001)
        return httpx.Timeout(t, connect=min(5.0, t))

    def check(self) -> None:
        with self._call():
            resp = self._client.get("/models", timeout=min(3.0, self.settings.timeout_s))
            self._raise_for(resp)

    def close(self) -> None:
        self._client.close()

    def _raise_for(self, resp: httpx.Response) -> None:
        """Map an error status onto the error kind the router's retry policy branches on."""
        code = resp.status_code
        if code < 400:
            return
        body = resp.text[:300]
        message = f"{self.name}: HTTP {code}: {body}"
        if code == 429:
            raise ProviderRateLimited(message, code, retry_after(resp.headers.get("retry-after")))
        if code == 408 or code >= 500:
            raise ProviderServerError(message, code, retry_after(resp.headers.get("retry-after")))
        if code in (401, 403):
            raise ProviderKeyRejected(message, code)
        if code in (400, 413, 422) and CONTEXT_TOO_LONG.search(body):
            raise ProviderContextTooLong(message, code)
        raise ProviderRejected(message, code)

    def _call(self):  # type: ignore[no-untyped-def]
        return _translate_errors(self.name)


# What OpenAI, vLLM, llama.cpp, DashScope and DeepSeek say when the prompt does not fit the model's window
CONTEXT_TOO_LONG = re.compile(
    r"context_length_exceeded|maximum context length|context (?:size|window|length)|too many tokens|"
    r"prompt is too long|input is too long|exceeds the (?:available )?context",
    re.IGNORECASE,
)


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _translate_errors:
    """Context manager mapping httpx's exceptions onto the provider error hierarchy."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        if exc is None or isinstance(exc, ProviderError):
            return False
        if isinstance(exc, httpx.TimeoutException):
            raise ProviderTimeout(f"{self.name}: timed out: {exc}") from exc
        if isinstance(exc, httpx.TransportError):
            raise ProviderRefused(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if isinstance(exc, ValueError):
            raise ProviderMalformed(f"{self.name}: bad response: {exc}") from exc
        return False
