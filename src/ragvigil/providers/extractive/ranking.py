"""Candidate sentences and how well each answers the question.

A sentence scores by the question's distinctive words it holds (weighted by how rare each word is among
the passages' sentences, so the article's entity, repeated everywhere, says little), by its background
e5 vector's similarity to the question's vector (when both exist), by holding the kind of content the
question asks for (a date for 何时, a reason for 为什么), and by the rank of its passage (the best passage
is strongly preferred). FAQ question lines are never candidates; their match goes to their answer."""

from __future__ import annotations

import itertools
import math
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ragvigil.knowledge.chunking import split_sentences
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.extractive.cues import QUESTION_WORDS, kinds_in, question_kind
from ragvigil.providers.extractive.faq import answer_prefix, is_question, strip_answer_prefix
from ragvigil.types import GenerationRequest, Hit, sentence_key

__all__ = ["Candidate", "Passage", "PassageCache", "Sentence", "Weights", "prepare", "rank"]

_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)、])\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORDISH = re.compile(r"[\u3400-\u9fff\uf900-\ufaffA-Za-z0-9]")


@dataclass(frozen=True)
class Weights:
    """The ranking's knobs, tuned on public reading-comprehension data (CMRC2018 trial)."""

    semantic: float = 4.0  # per unit of cosine above the candidates' mean
    kind: float = 0.25  # holds the kind of content the question asks for
    passage: float = 0.35  # per rank of the passage below the first
    position: float = 0.004  # per sentence into the passage
    short: float = 0.3  # fewer than ``short_chars`` word characters: rarely an answer alone
    short_chars: int = 6
    pair_margin: float = 0.5  # the best's neighbour this close in score joins the answer (0: never)
    pair_chars: int = 120  # ...when the two together are no longer than this
    topic: float = 0.1  # share of a question term's weight when it names the passage's topic
    said: float = 2.0  # a follow-up's own terms, against the terms its resolved query carried over


@dataclass
class Candidate:
    """One sentence that may answer: where it is, what a reader sees, and its score."""

    passage: int  # index into request.passages
    position: int  # index among its passage's sentences
    text: str  # as shown: list bullet and 答：/A: mark removed
    key: str  # ``sentence_key`` of the sentence as the splitter returned it
    score: float = 0.0
    lexical: float = 0.0
    semantic: float | None = None
    faq_answer: bool = False  # follows an FAQ question line
    rank_passage: int = 0  # the passage rank it is scored at: an FAQ answer takes its question's best


@dataclass(frozen=True, slots=True)
class Sentence:
    """What ranking needs of one sentence of a passage, independent of the question: computed once per chunk."""

    raw: str  # as the splitter returned it
    asks: bool  # a question line (FAQ 问/Q, or ending in a question mark)
    key: str  # ``sentence_key(raw)``: the background vector's key
    tokens: frozenset[str]
    chars: str  # its word characters, lower case: a character bigram ``b`` is one of its own iff ``b in chars``
    text: str  # as shown: list bullet and 答：/A: mark removed
    norm: str  # ``text`` whitespace-normalised: identical sentences of overlapping chunks appear once
    wordish: bool  # holds a word character (else never a candidate)
    size: int  # word characters of ``text``
    kinds: frozenset[str]  # the kinds of content ``text`` holds (``cues.kinds_in``)
    faq_answer: bool  # marked as an FAQ answer (答：, A:)


@dataclass(frozen=True, slots=True)
class Passage:
    """A passage's sentences, prepared, and the words of its lead (heading + first non-question sentence)."""

    sentences: tuple[Sentence, ...]
    lead_tokens: frozenset[str]
    lead_chars: str


def prepare(text: str, anchor: str | None, tokenizer: Tokenizer) -> Passage:
    """Split, tokenize and classify a passage's sentences once; a question heading leads (``Passage``)."""
    rows = [(s, is_question(s)) for s in split_sentences(text)]
    heading = (anchor or "").split(" > ")[-1].strip()
    if heading and is_question(heading) and not (rows and rows[0][0] == heading):
        rows.insert(0, (heading, True))
    sentences = []
    for raw, asks in rows:
        shown = strip_answer_prefix(_BULLET.sub("", raw).strip())
        sentences.append(
            Sentence(
                raw,
                asks,
                sentence_key(raw),
                frozenset(map(sys.intern, tokenizer.tokens(raw))),
                _chars(raw),
                shown,
                " ".join(shown.split()),
                bool(_WORDISH.search(shown)),
                len(_WORDISH.findall(shown)),
                kinds_in(shown),
                answer_prefix(raw),
            )
        )
    lead = " ".join([anchor or "", next((s for s, asks in rows if not asks), "")])
    return Passage(tuple(sentences), frozenset(map(sys.intern, tokenizer.tokens(lead))), _chars(lead))


class PassageCache:
    """Prepared passages by (chunk id, anchor, text), least recently used dropped beyond ``max_entries``.

    Keyed by the text and not the id alone: a chunk id may come back with another text after a replace,
    and the prepared sentences must then be those of the new text. The strings of a passage are the
    catalog's own objects, so the key's hash is computed once per string, not per turn."""

    def __init__(self, tokenizer: Tokenizer, max_entries: int = 512) -> None:
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, str | None, str], Passage] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, hit: Hit) -> Passage:
        key = (hit.chunk_id, hit.anchor, hit.text)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        found = prepare(hit.text, hit.anchor, self.tokenizer)  # outside the lock: two turns may both prepare it
        with self._lock:
            self._entries[key] = found
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return found


def _weights(
    q_terms: set[str], docs: Sequence[Collection[str]], topic: Collection[str], topic_share: float
) -> dict[str, float]:
    """Each question term's weight: longer and rarer among the candidate sentences is stronger, and a term
    naming what the passage is about (in its heading or lead sentence) counts ``topic_share`` of that: it
    says which article, not which sentence of it answers."""
    n = max(1, len(docs))
    out: dict[str, float] = {}
    for t in q_terms:
        df = sum(1 for d in docs if t in d)
        out[t] = min(len(t), 4) * math.log((n + 1) / (df + 0.5)) * (topic_share if t in topic else 1.0)
    return out


def _chars(text: str) -> str:
    """The word characters of ``text``, lower case: its character bigrams are exactly its 2-character substrings."""
    return "".join(c for c in text.lower() if _WORDISH.match(c))


def _bigrams(text: str) -> set[str]:
    chars = _chars(text)
    return {a + b for a, b in itertools.pairwise(chars)}


def rank(
    request: GenerationRequest,
    tokenizer: Tokenizer,
    weights: Weights | None = None,
    passages: PassageCache | None = None,
) -> list[Candidate]:
    """Every answering candidate of ``request``'s passages, best first; identical sentences appear once.

    ``passages`` keeps what does not depend on the question (sentences, their tokens, bigrams, cue kinds),
    so a turn only scores; without it every passage is prepared afresh."""
    w = weights or Weights()
    prepared = [
        passages.get(h) if passages is not None else prepare(h.text, h.anchor, tokenizer) for h in request.passages
    ]
    question = request.search_query or request.question  # "团队版呢？" as the follow-up resolved it: "团队版多少钱？"
    q_terms = {t for t in tokenizer.tokens(question) if t not in QUESTION_WORDS}
    q_bigrams = {b for b in _bigrams(question) if not any(b in qw for qw in QUESTION_WORDS if len(qw) > 1)}
    flat = [s for p in prepared for s in p.sentences]
    unique = {s.raw: s.tokens for s in flat}  # a sentence repeated by overlapping chunks counts once for its words
    term_w = _weights(q_terms, list(unique.values()), prepared[0].lead_tokens, w.topic)
    bigram_w = _weights(q_bigrams, [s.chars for s in flat], prepared[0].lead_chars, w.topic)
    if request.search_query:  # a follow-up: what the user just asked ("mobile") outweighs the carried topic
        said, said_grams = set(tokenizer.tokens(request.question)), _bigrams(request.question)
        term_w = {t: v * (w.said if t in said else 1.0) for t, v in term_w.items()}
        bigram_w = {b: v * (w.said if b in said_grams else 1.0) for b, v in bigram_w.items()}
    total = sum(term_w.values()) or 1.0
    total_b = sum(bigram_w.values()) or 1.0
    asked = question_kind(question)
    qv = request.query_vector
    vectors: dict[str, Any] = request.sentence_vectors or {}

    def lexical(s: Sentence) -> float:
        words = sum(v for t, v in term_w.items() if t in s.tokens) / total
        chars = sum(v for b, v in bigram_w.items() if b in s.chars) / total_b
        return 0.5 * words + 0.5 * chars

    candidates: list[Candidate] = []
    kinds: list[frozenset[str]] = []
    sizes: list[int] = []
    seen: set[str] = set()
    asked_at: dict[str, int] = {}  # an FAQ question line -> the best passage holding it (chunks overlap)
    for p_idx, passage in enumerate(prepared):
        pending: float | None = None  # the match of the FAQ question line just read, for its answer
        pending_sem: float | None = None
        question_rank = p_idx
        for pos, sent in enumerate(passage.sentences):
            lex = lexical(sent)
            sem = _cosine(qv, vectors.get(sent.key))
            if sent.asks:
                pending, pending_sem = lex, sem
                question_rank = asked_at.setdefault(" ".join(sent.raw.split()), p_idx)
                continue
            faq = pending is not None or sent.faq_answer
            rank_passage = p_idx
            if pending is not None:  # the answer inherits its question's match and rank
                lex = max(lex, pending)
                sem = sem if pending_sem is None else max(sem or pending_sem, pending_sem)
                rank_passage = question_rank
                pending = pending_sem = None
            if not sent.wordish or sent.norm in seen:
                continue
            seen.add(sent.norm)
            candidates.append(
                Candidate(
                    p_idx,
                    pos,
                    sent.text,
                    sent.key,
                    lexical=lex,
                    semantic=sem,
                    faq_answer=faq,
                    rank_passage=rank_passage,
                )
            )
            kinds.append(sent.kinds)
            sizes.append(sent.size)
    if not candidates:
        return []
    sems = [c.semantic for c in candidates if c.semantic is not None]
    mean_sem = sum(sems) / len(sems) if sems else 0.0
    for c, held, size in zip(candidates, kinds, sizes, strict=True):
        score = c.lexical - w.passage * c.rank_passage - w.position * c.position
        if c.semantic is not None:
            score += w.semantic * (c.semantic - mean_sem)
        if asked and asked in held:
            score += w.kind
        if size < w.short_chars:
            score -= w.short
        c.score = score
    return sorted(candidates, key=lambda c: (-c.score, c.passage, c.position))


def _cosine(a: Any, b: Any) -> float | None:
    """Dot product of two normalised vectors, or None when either is missing or they do not match."""
    if a is None or b is None:
        return None
    try:
        return float(a @ b)
    except (TypeError, ValueError):
        return None
