"""The ``usage`` object of OpenAI-compatible answers.

Clients (LangChain, LlamaIndex, cost dashboards) read ``usage.total_tokens`` and break on ``null``.
The generator's own counts are used when it reports them (an OpenAI-compatible endpoint answering
without streaming); otherwise, e.g. for the extractive generator or a stream, the counts are an
estimate: one token per word, number, punctuation mark or CJK character, which is close to what
BPE tokenizers give for short support questions.
"""

from __future__ import annotations

import re

from ragvigil.chat.pipeline import Turn

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|[^\w\s]|_")


def estimate_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` is (see the module docstring)."""
    return sum(1 for _ in _TOKEN.finditer(text))


def usage(turn: Turn, prompt_text: str) -> dict[str, int]:
    """Token counts of one answered turn; ``prompt_text`` is what the client sent."""
    gen = turn.generation
    prompt = gen.prompt_tokens if gen is not None and gen.prompt_tokens is not None else None
    completion = gen.completion_tokens if gen is not None and gen.completion_tokens is not None else None
    if prompt is None:
        prompt = estimate_tokens(prompt_text)
    if completion is None:
        completion = estimate_tokens(turn.answer)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
