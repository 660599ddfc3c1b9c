"""The light values that cross layers: a retrieved passage, a retrieval, a generation request and its answer.

Here, and not next to the code that makes them, because a provider, a test or a drill that only needs
the shapes must not pay for the index that produces them: importing ``knowledge.retrieval`` pulls in
faiss, SQLAlchemy and jieba (about a second). This module imports only the standard library.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Generation", "GenerationRequest", "Hit", "Retrieval", "sentence_key"]


def sentence_key(text: str) -> str:
    """The key a sentence's background vector is stored and looked up under: its whitespace-normalised text, hashed.

    By text and not by position, so a vector computed with an older sentence splitter is simply not found
    (the sentence is then ranked without it) rather than attached to the wrong sentence."""
    return hashlib.blake2b(" ".join(text.split()).encode(), digest_size=12).hexdigest()


@dataclass
class Hit:
    """One ranked chunk, with the scores that placed it and whether it is relevant to the query."""

    chunk_id: int
    document_id: str
    title: str
    source: str
    anchor: str
    text: str
    score: float
    bm25_score: float | None = None
    bm25_rank: int | None = None
    vector_score: float | None = None
    vector_rank: int | None = None
    term_coverage: float = 0.0
    relevant: bool = False
    quality: str | None = None  # a quality warning on the document (repaired, damaged, released); None: clean
    warnings: tuple[str, ...] = ()  # the document's loader warnings
    language: str | None = None  # the chunk's script, zh or en (None: neither)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Retrieval:
    """What one search found; ``vector_error`` says when BM25 answered alone."""

    query: str  # as searched: cut to max_query_chars
    tokens: list[str]
    hits: list[Hit]
    vector_error: str | None = None  # set when vector search failed and BM25 answered alone
    truncated: bool = False  # the query was longer than max_query_chars
    warnings: list[str] = field(default_factory=list)
    query_vector: Any = None  # the e5 query vector the vector side searched with (a numpy array), when it ran

    @property
    def relevant_hits(self) -> list[Hit]:
        return [h for h in self.hits if h.relevant]


@dataclass
class GenerationRequest:
    """A generator's whole input: it sees nothing of the turn beyond this."""

    question: str
    passages: list[Hit]  # relevant passages only, in citation order ([1] is passages[0])
    history: list[tuple[str, str]] = field(default_factory=list)  # (role, content), oldest first
    language: str = "en"
    timeout_s: float | None = None  # what is left of the turn's budget: a remote generator waits no longer
    # the question as retrieval searched it, when a follow-up was resolved against the conversation
    # ("团队版呢？" → "团队版多少钱？"); a generator without the history ranks with it. None: the question itself
    search_query: str | None = None
    query_vector: Any = None  # the e5 vector of the search query (numpy), when the vector side ran
    # background vectors of the passages' sentences, by ``sentence_key``; a sentence missing here has none
    sentence_vectors: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """An answer and who produced it (``provider``), with the token counts it reported."""

    text: str
    provider: str
    cited: list[int] = field(default_factory=list)  # 1-based indexes into passages
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None  # the model asked (set by MeteredGenerator), for the trace's GenAI attributes
    degraded_reason: str | None = None  # set by the router when a fallback answered: why the preferred ones did not
