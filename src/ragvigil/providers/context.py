"""Fit a request into a model's context window, counted in (estimated) tokens before the call.

Why before: an endpoint that is asked for more than its window answers 400 after queueing the
whole prompt, and some (llama.cpp) silently cut it. The estimate is one token per word, number,
punctuation mark or CJK character (the same rule as the API's ``usage`` estimate), close to what
BPE tokenizers give for support questions; a per-message overhead covers the chat template.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ragvigil.providers.base import GenerationRequest
from ragvigil.providers.openai_compat import build_messages

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|[^\w\s]|_")
PER_MESSAGE = 4  # role and separators of the chat template


def estimate_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def prompt_tokens(request: GenerationRequest) -> int:
    """Estimated tokens of the whole prompt the OpenAI-compatible generator would send."""
    return sum(estimate_tokens(m["content"]) + PER_MESSAGE for m in build_messages(request))


def fit(request: GenerationRequest, context_tokens: int, max_tokens: int) -> tuple[GenerationRequest, bool]:
    """``request`` with the oldest history dropped, then the last passages, until prompt and answer fit.

    Returns the request and whether anything was cut. The question and the first passage are
    always kept: if even they do not fit, the endpoint says so and the router fails over.
    """
    budget = context_tokens - max_tokens
    out, cut = request, False
    while prompt_tokens(out) > budget:
        if out.history:
            out = replace(out, history=out.history[2:] if len(out.history) > 1 else [])
        elif len(out.passages) > 1:
            out = replace(out, passages=out.passages[:-1])
        else:
            break
        cut = True
    return out, cut


def trim_hard(request: GenerationRequest) -> GenerationRequest:
    """After the endpoint itself said the prompt is too long: no history, half the passages (at least one)."""
    keep = max(1, len(request.passages) // 2)
    return replace(request, history=[], passages=request.passages[:keep])
