"""The chat pipeline: a list of small stages, each with one job, run in order on a Turn.

The chain is data (``ChatPipeline.stages``), like structlog's processors. Each stage does its job
and says what its span should carry (``span_attributes``); one that can stream its output is a
``StreamingStage``. Everything else about a stage run -- its metrics, its span, its log line --
belongs to observers (``chat.observers``) that the pipeline notifies, in the manner of tenacity's
before/after hooks: a new stage needs no edit anywhere else.

A stage placed before retrieval may settle the turn (``Turn.settled_by``, e.g. the safety check or
safe mode): it has fixed the answer, so ``Retrieve`` and ``Generate`` leave the turn alone and
``Persist`` stores it. A stage after the streaming one that must see the answer before the client
does (the output check) is a ``StreamGuard``: a stream is relayed through it.

A turn has a time budget (``retrieval.turn_budget_s``, counted from when the request arrived).
Python cannot interrupt a call already running, so the budget is spent where waiting happens:
the wait for a free embedding engine, the optional follow-up search, and the generator's
timeout. A turn past its budget skips what is left of retrieval and generation and ends
degraded with a plain "took too long" answer; it is still persisted.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.exc import SQLAlchemyError

from ragvigil.chat.answer_cache import AnswerCache, CachedAnswer
from ragvigil.chat.followup import FollowupResolver
from ragvigil.chat.history import SessionHistory
from ragvigil.chat.journal import Journal, JournalFull
from ragvigil.chat.observers import PipelineObserver, default_observers, deliver_stage, listening, notify_turn
from ragvigil.chat.sessions import ANONYMOUS_OWNER, SessionOwner, SessionStore, StoredMessage
from ragvigil.chat.streaming import DetachedStream
from ragvigil.chat.turn_writer import TurnWriter
from ragvigil.chat.understanding import Handoff, SafetyVerdict, TurnAnalysis
from ragvigil.errors import DependencyUnavailable, UnstorableInput
from ragvigil.knowledge.retrieval import HybridRetriever
from ragvigil.knowledge.sentence_vectors import SentenceVectorCache, SentenceVectorReader
from ragvigil.knowledge.tokenize import is_cjk
from ragvigil.ops import instrumentation, metrics, semconv, tracing
from ragvigil.ops.message_log import EncryptedMessageLog, turn_record
from ragvigil.providers.base import Generator, ProviderError
from ragvigil.providers.extractive import NO_ANSWER
from ragvigil.storage.errors import describe, is_data_error, is_outage
from ragvigil.storage.models import new_id, utcnow
from ragvigil.types import Generation, GenerationRequest, Hit, Retrieval

__all__ = [
    "OUT_OF_TIME",
    "BaseStage",
    "ChatPipeline",
    "DependencyUnavailable",
    "Generate",
    "LoadHistory",
    "Persist",
    "RecordContents",
    "Retrieve",
    "Stage",
    "StreamGuard",
    "StreamingStage",
    "Turn",
    "UnstorableTurn",
    "finish_turn",
    "run_stage",
]

log = logging.getLogger(__name__)
# the children a turn counts into, looked up once (``labels()`` per turn is a dict lookup under a lock)
_SENTENCE_READ_OK = metrics.SENTENCE_VECTOR_READS.labels("ok")
_SENTENCE_READ_ERROR = metrics.SENTENCE_VECTOR_READS.labels("error")


class UnstorableTurn(UnstorableInput):
    """The database refused the turn's values: a fault of the input, not an outage (a 422, never journaled)."""

    field = "message"


@dataclass
class Turn:
    """Everything one question accumulates on its way through the pipeline."""

    message: str
    kb: str
    session_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None
    owner: str = ANONYMOUS_OWNER  # the caller: with user_id, who the session belongs to
    new_session: bool = False
    language: str = "en"
    history: list[tuple[str, str]] = field(default_factory=list)
    # the session's last stored messages, whole, as LoadHistory read them (None: not read, e.g. a /v1 turn)
    earlier: list[Any] | None = None
    retrieval: Retrieval | None = None
    generation: Generation | None = None
    answer: str = ""
    partial: list[str] = field(default_factory=list)  # the deltas streamed so far (kept if the turn is cut short)
    sources: list[dict[str, Any]] = field(default_factory=list)
    degraded: bool = False
    degraded_reasons: list[str] = field(default_factory=list)
    message_id: str = field(default_factory=new_id)
    user_message_id: str = field(default_factory=new_id)
    persisted_to: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    out_of_time: bool = False  # the turn budget ran out; what was left of it was skipped
    settled_by: str | None = None  # the stage that already fixed the answer: retrieval and generation skip the turn
    received_at: Any = field(default_factory=utcnow)
    analysis: TurnAnalysis | None = None  # safety, emotion and intent of the user message (``chat.understanding``)
    handoff: Handoff | None = None  # set when the turn was handed to a person
    output_verdict: SafetyVerdict | None = None  # the answer's safety check (None: not checked)
    replaced: bool = False  # the answer failed the output check and was replaced by a safe one
    query_reason: str | None = None  # why retrieval searched what it did: first turn, new topic, or a follow-up's cue
    answer_key: Any = None  # the answer cache's key of this turn (None: not looked up)
    cached: CachedAnswer | None = None  # the kept answer this turn is answered with (``chat.answer_cache``)

    @property
    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def open_session(self) -> None:
        """Give a turn without a session a new one (so logs can carry its id from the start)."""
        if self.session_id is None:
            self.session_id = new_id()
            self.new_session = True

    def degrade(self, reason: str) -> None:
        self.degraded = True
        self.degraded_reasons.append(reason)

    def time_left(self, budget_s: float | None) -> float | None:
        """Seconds of ``budget_s`` this turn has still to spend (None: no budget)."""
        if budget_s is None:
            return None
        return budget_s - (time.perf_counter() - self.started)

    def run_out_of_time(self, budget_s: float | None, where: str) -> None:
        """Mark the turn as past its budget (once): later stages skip their work."""
        if not self.out_of_time:
            self.out_of_time = True
            self.degrade(f"turn budget of {budget_s:g}s used up {where}")


OUT_OF_TIME = {
    "zh": "抱歉，这个问题处理超时，没能及时回答。请稍后再试，或把问题问得简短一些。",
    "en": "Sorry, answering this took too long, so it was stopped. Please try again, or ask a shorter question.",
}


class Stage(Protocol):
    """One step of the chain: it reads and writes the turn, and describes its part for the trace."""

    name: str

    def __call__(self, turn: Turn) -> None: ...

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        """The attributes of this stage's span, read after it ran (None values are left out)."""
        ...


@runtime_checkable
class StreamingStage(Stage, Protocol):
    """A stage that can also yield its output piece by piece (``ChatPipeline.stream`` streams the first one)."""

    def stream(self, turn: Turn) -> Iterator[str]: ...


@runtime_checkable
class StreamGuard(Stage, Protocol):
    """A stage after the streaming one that must see its output before the client does (the output check):
    ``ChatPipeline.stream`` relays the streaming stage's deltas through its ``guard``."""

    def guard(self, turn: Turn, deltas: Iterator[str]) -> Iterator[str]: ...


class BaseStage(ABC):
    """What a stage gets for free: a plain CHAIN span. Subclasses do their part of the turn in ``__call__``
    and may say more about it in ``span_attributes``."""

    name: str = "stage"

    @abstractmethod
    def __call__(self, turn: Turn) -> None:
        """Do this stage's part of the turn."""

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        return {semconv.SPAN_KIND: semconv.CHAIN}  # session and request ids live on the root span


class run_stage:
    """Time one stage and hand what happened to the observers, in the writer's next batch.

    A stage that degrades the turn is reported as degraded, one that raises as error. Nothing is
    reported while instrumentation is off. A class rather than ``@contextmanager``: it runs around
    every stage of every turn, and a generator per stage cost more than the timing itself.
    """

    __slots__ = ("before", "observers", "stage", "start", "turn")

    def __init__(self, stage: Stage, turn: Turn, observers: Sequence[PipelineObserver]) -> None:
        self.stage = stage
        self.turn = turn
        self.observers = observers

    def __enter__(self) -> None:
        self.before = len(self.turn.degraded_reasons)
        self.start = time.time_ns()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not instrumentation.enabled:
            return
        end = time.time_ns()
        turn = self.turn
        outcome = "ok"
        if exc_type is not None:
            outcome = "error"
        elif len(turn.degraded_reasons) > self.before:
            outcome = "degraded"
        turn.stages_ms[self.stage.name] = round((end - self.start) / 1e6, 2)
        if not self.observers:
            return
        # one deferred call for every observer: the stage's fields of the turn are final by now
        instrumentation.later(
            deliver_stage,
            self.observers,
            self.stage,
            turn,
            outcome,
            self.start,
            end,
            turn.degraded,
            tracing.current_spans.get(),
            getattr(exc_type, "__qualname__", None),
        )


def finish_turn(turn: Turn, observers: Sequence[PipelineObserver]) -> None:
    """Tell the observers the turn is over (also when a stage raised: its log line and counts still count)."""
    notify_turn(observers, turn)


class LoadHistory(BaseStage):
    """Recent turns of the session, for follow-up questions and the prompt (journaled ones included)."""

    name = "history"

    def __init__(self, history: SessionHistory, turns: int, look_back: int = 0) -> None:
        self.history = history
        self.turns = turns
        self.look_back = look_back  # messages later stages read whole (the hand-off policy's trends)

    def __call__(self, turn: Turn) -> None:
        turn.language = "zh" if is_cjk(turn.message) else "en"
        turn.open_session()
        if turn.new_session:
            turn.earlier = []
            return
        owner = SessionOwner(turn.owner, turn.user_id)
        count = max(2 * self.turns, self.look_back)
        messages, problem = self.history.recent_messages(turn.session_id, count, owner)
        turn.history = [(m.role, m.content) for m in messages[-2 * self.turns :]] if self.turns else []
        turn.earlier = messages[-self.look_back :] if self.look_back else []
        if problem:
            turn.degrade(f"history unavailable: {problem}")

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        return {semconv.SPAN_KIND: semconv.CHAIN, "ragvigil.history_turns": len(turn.history) // 2}


class FeatureGate(Protocol):
    """Which non-core features are on (``ops.admission.FeatureFlags``); a stage skips a shed one."""

    def enabled(self, name: str) -> bool: ...


class Retrieve(BaseStage):
    """Hybrid retrieval; a follow-up is searched with the topic the conversation carries (``chat.followup``).

    The carried context is bounded (``context_chars``, a few turns): a client-sent history of any
    length must not turn into a query that costs minutes to embed. A search waits for a free
    embedding engine at most half of the turn's time left, so BM25 and generation still have the
    other half to answer with.
    """

    name = "retrieve"

    def __init__(
        self,
        retriever: HybridRetriever,
        budget_s: float | None = None,
        context_chars: int = 500,
        features: FeatureGate | None = None,
        answers: AnswerCache | None = None,
    ) -> None:
        self.retriever = retriever
        self.budget_s = budget_s
        self.context_chars = context_chars
        self.features = features  # under load the follow-up search is shed (``contextual_search``)
        self.answers = answers  # a first-turn question asked before is answered from here (generate skips)
        self.resolver = FollowupResolver(lambda text: retriever.tokenizer.tokens(text), max_chars=context_chars)

    def __call__(self, turn: Turn) -> None:
        if turn.settled_by is not None:
            return
        left = turn.time_left(self.budget_s)
        if left is not None and left <= 0:
            turn.run_out_of_time(self.budget_s, "before retrieval")
            return  # no search was made: the turn has no retrieval
        if self.answers is not None and self._cached(turn, self.answers):
            return
        result = self.retriever.search(turn.kb, turn.message, embed_wait_s=_half(left))
        contextual = self.features is None or self.features.enabled("contextual_search")
        turn.query_reason = "new topic" if turn.history else "first turn"
        if turn.history and not contextual:
            turn.query_reason = "new topic (contextual search shed)"
        elif turn.history and self.context_chars > 0:
            # a follow-up is searched again with the carried topic; a new topic keeps the search above
            resolution = self.resolver.resolve(turn.message, turn.history, bool(result.relevant_hits))
            turn.query_reason = resolution.reason if not resolution.followup else f"follow-up: {resolution.reason}"
            left = turn.time_left(self.budget_s)
            if resolution.followup and left is not None and left <= 0:
                turn.run_out_of_time(self.budget_s, "before the follow-up search")
            elif resolution.followup:
                resolved = self.retriever.search(turn.kb, resolution.query, embed_wait_s=_half(left))
                if self._about(resolved.relevant_hits, result.tokens):
                    result = resolved
                else:  # what the topic found does not speak to the question: "明天会下雨吗" is new
                    turn.query_reason = f"new topic (a {resolution.reason} off the carried topic)"
        if result.vector_error:
            turn.degrade(f"vector search unavailable: {result.vector_error}")
        turn.retrieval = result

    def _cached(self, turn: Turn, answers: AnswerCache) -> bool:
        """Answer ``turn`` from the cache when it may be and a kept answer exists; else note its key for Generate.

        A turn with history is never looked up: its answer may depend on the conversation (a follow-up's
        resolved query, the history in an LLM prompt)."""
        if turn.history or answers.paused():
            answers.bypass()
            return False
        try:
            key = answers.key(turn.kb, turn.message, turn.language)
        except Exception:  # the version could not be read (store or database failing): search as usual
            answers.bypass()
            return False
        turn.answer_key = key
        found = answers.get(key)
        if found is None:
            return False
        turn.cached = found
        turn.retrieval = replace(found.retrieval, hits=list(found.retrieval.hits))
        turn.query_reason = "first turn (answer cache)"
        return True

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        """A RETRIEVER: the query searched and why, its documents by chunk id and score (text only when kept)."""
        if turn.retrieval is None:
            return {semconv.SPAN_KIND: semconv.CHAIN, "ragvigil.settled_by": turn.settled_by}
        hits = turn.retrieval.relevant_hits
        attrs: dict[str, Any] = {
            semconv.SPAN_KIND: semconv.RETRIEVER,
            "ragvigil.retrieval.hits": len(turn.retrieval.hits),
            "ragvigil.retrieval.relevant_hits": len(hits),
            "ragvigil.retrieval.query_reason": turn.query_reason or "",
            "ragvigil.retrieval.followup": (turn.query_reason or "").startswith("follow-up"),
        }
        attrs.update(semconv.text_io(turn.message, None))
        if semconv.contents_captured():  # the query searched is the user's text, kept only as contents are
            attrs["ragvigil.retrieval.query"] = semconv.text(turn.retrieval.query)
        attrs.update(semconv.documents((h.chunk_id, h.score, h.text, {"document_id": h.document_id}) for h in hits))
        return attrs

    def _about(self, hits: list[Hit], tokens: list[str]) -> bool:
        """Context-assisted hits must still speak to the new message ("明天会下雨吗" is a new topic)."""
        if not hits or not tokens:
            return bool(hits)  # "那怎么办？" has nothing of its own: it is all context
        seen = set(self.retriever.tokenizer.tokens(" ".join(f"{h.anchor} {h.text}" for h in hits)))
        return bool(set(tokens) & seen)


def _half(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 2


class Generate(BaseStage):
    """Ask the generator; on a provider failure answer with the fallback and flag the turn degraded."""

    name = "generate"

    def __init__(
        self,
        generator: Generator,
        fallback: Generator,
        max_passages: int = 4,
        budget_s: float | None = None,
        sentence_vectors: SentenceVectorReader | None = None,
        answers: AnswerCache | None = None,
    ) -> None:
        self.generator = generator
        self.fallback = fallback
        self.max_passages = max_passages
        self.budget_s = budget_s
        self.sentence_vectors = sentence_vectors  # the passages' background sentence vectors, when kept
        # a popular passage's sentence vectors are read once, not on every turn (a store answering per chunk)
        self.sentence_cache = (
            SentenceVectorCache(sentence_vectors) if hasattr(sentence_vectors, "read_chunks") else None
        )
        self.answers = answers  # where a clean first-turn answer is kept (``Retrieve`` looks it up)

    def request(self, turn: Turn) -> GenerationRequest:
        """The generator's input; none of the passages once the turn is past its budget."""
        passages = turn.retrieval.relevant_hits[: self.max_passages] if turn.retrieval else []
        left = turn.time_left(self.budget_s)
        if left is not None and left <= 0:
            turn.run_out_of_time(self.budget_s, "before generation")
        if turn.out_of_time:
            passages = []
        query_vector = turn.retrieval.query_vector if turn.retrieval else None
        searched = turn.retrieval.query if turn.retrieval else None
        return GenerationRequest(
            turn.message,
            passages,
            turn.history,
            turn.language,
            search_query=searched if searched and searched != turn.message else None,
            query_vector=query_vector,
            sentence_vectors=self._sentence_vectors(passages) if query_vector is not None else {},
            timeout_s=left,
        )

    def _sentence_vectors(self, passages: list[Hit]) -> dict[str, Any]:
        """The passages' sentence vectors in one read; a store that fails costs the turn only them (counted)."""
        if self.sentence_vectors is None or not passages:
            return {}
        try:
            if self.sentence_cache is not None:
                found = self.sentence_cache.read([(p.chunk_id, p.text) for p in passages])
            else:
                found = self.sentence_vectors.read([p.chunk_id for p in passages])
        except Exception as exc:  # any store failure: the answer is built without them, never fails the turn
            _SENTENCE_READ_ERROR.inc()
            log.debug("sentence_vectors_unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            return {}
        _SENTENCE_READ_OK.inc()
        return dict(found)

    def no_answer(self, turn: Turn) -> Generation:
        return Generation((OUT_OF_TIME if turn.out_of_time else NO_ANSWER)[turn.language], "none")

    def _from_cache(self, turn: Turn, cached: CachedAnswer) -> None:
        """The kept generation as this turn's answer: the same text, sources and flags as when it was made."""
        turn.generation = replace(cached.generation, cited=list(cached.generation.cited))
        finish(turn, GenerationRequest(turn.message, list(cached.passages), language=turn.language))

    def _keep(self, turn: Turn, req: GenerationRequest) -> None:
        """Keep a clean answer of a turn the cache may answer (looked up by ``Retrieve``, so no history)."""
        if self.answers is None or turn.answer_key is None or turn.generation is None or turn.retrieval is None:
            return
        if turn.degraded or turn.out_of_time or turn.generation.degraded_reason or turn.retrieval.vector_error:
            return
        if self.answers.paused():
            return  # a degraded answer is made afresh next time: the cause may have passed
        self.answers.put(turn.answer_key, turn.retrieval, turn.generation, req.passages)

    def __call__(self, turn: Turn) -> None:
        if turn.settled_by is not None:
            return
        if turn.cached is not None:
            self._from_cache(turn, turn.cached)
            return
        req = self.request(turn)
        if not req.passages:
            turn.generation = self.no_answer(turn)
        else:
            try:
                turn.generation = self.generator.generate(req)
                if turn.generation.degraded_reason:  # the router answered through its last resort
                    turn.degrade(turn.generation.degraded_reason)
            except ProviderError as exc:
                turn.degrade(f"{self.generator.name} failed ({exc.kind}); answered by {self.fallback.name}")
                log.warning("generator_failed", extra={"provider": self.generator.name, "error": str(exc)})
                turn.generation = self.fallback.generate(req)
        finish(turn, req)
        self._keep(turn, req)

    def stream(self, turn: Turn) -> Iterator[str]:
        if turn.settled_by is not None:  # the answer is fixed: it is the whole stream
            if turn.answer:
                yield turn.answer
            return
        if turn.cached is not None:
            self._from_cache(turn, turn.cached)
            yield turn.answer
            return
        req = self.request(turn)
        if not req.passages:
            turn.generation = self.no_answer(turn)
            yield turn.generation.text
        else:
            parts: list[str] = []
            stream = self.generator.stream(req)
            # a routed stream says who answered (and why a fallback did) once it is read
            name, model = self.generator.name, getattr(self.generator, "model", None)
            try:
                for delta in stream:
                    parts.append(delta)
                    yield delta
                name, model = getattr(stream, "provider", None) or name, getattr(stream, "model", None) or model
                if reason := getattr(stream, "degraded_reason", None):
                    turn.degrade(reason)
            except ProviderError as exc:
                failed = getattr(stream, "provider", None) or self.generator.name
                turn.degrade(f"{failed} failed ({exc.kind}); answered by {self.fallback.name}")
                name, model = self.fallback.name, getattr(self.fallback, "model", None)
                if parts:
                    yield "\n\n"
                    parts.append("\n\n")
                for delta in self.fallback.stream(req):
                    parts.append(delta)
                    yield delta
            turn.generation = Generation("".join(parts).strip(), name, model=model)
        finish(turn, req)
        self._keep(turn, req)

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        """An LLM call in OpenInference and GenAI terms; a CHAIN when no model was asked (no passage, settled)."""
        gen = turn.generation
        if turn.settled_by is not None or gen is None or gen.provider == "none":
            return {semconv.SPAN_KIND: semconv.CHAIN, "ragvigil.settled_by": turn.settled_by}
        attrs: dict[str, Any] = {semconv.SPAN_KIND: semconv.LLM, semconv.GENAI_OPERATION: "chat"}
        attrs[semconv.GENAI_PROVIDER] = attrs[semconv.GENAI_SYSTEM] = attrs[semconv.LLM_PROVIDER] = gen.provider
        attrs[semconv.GENAI_REQUEST_MODEL] = attrs[semconv.LLM_MODEL] = gen.model
        attrs[semconv.GENAI_INPUT_TOKENS] = attrs[semconv.LLM_PROMPT_TOKENS] = gen.prompt_tokens
        attrs[semconv.GENAI_OUTPUT_TOKENS] = attrs[semconv.LLM_COMPLETION_TOKENS] = gen.completion_tokens
        if gen.prompt_tokens is not None and gen.completion_tokens is not None:
            attrs[semconv.LLM_TOTAL_TOKENS] = gen.prompt_tokens + gen.completion_tokens
        attrs[semconv.GENAI_CONVERSATION] = turn.session_id
        attrs.update(semconv.text_io(turn.message, turn.answer))
        return attrs


def finish(turn: Turn, req: GenerationRequest) -> None:
    """Shape the answer and its sources once generation is done."""
    gen = turn.generation
    assert gen is not None
    turn.answer = gen.text
    turn.sources = [
        {
            "n": i,
            "document_id": h.document_id,
            "chunk_id": h.chunk_id,
            "title": h.title,
            "source": h.source,
            "anchor": h.anchor,
            "score": round(h.score, 6),
            "bm25_score": h.bm25_score,
            "vector_score": h.vector_score,
            "cited": i in gen.cited or f"[{i}]" in gen.text,
            "snippet": h.text[:300],
            "quality": h.quality,
            "warnings": list(h.warnings),
        }
        for i, h in enumerate(req.passages, 1)
    ]


INTERRUPTED = {
    "en": "(The answer was interrupted because the service was restarting. Please ask again.)",
    "zh": "（服务重启，回答被中断。请再问一次。）",
}


class Persist(BaseStage):
    """Store the user message and the answer; if the database fails, journal them (never lose a turn).

    Data the database refuses is not journaled: it would fail the same way on every replay. It is
    raised as ``UnstorableTurn`` so the caller hears that its input was at fault.
    """

    name = "persist"
    REQUEST_ID_CHARS = 64  # the width of messages.request_id: a longer caller id must not fail the write

    def __init__(self, sessions: SessionStore, journal: Journal, writer: TurnWriter | None = None) -> None:
        self.sessions = sessions
        self.journal = journal
        self.writer = writer  # commits concurrent turns together; without it each turn is its own transaction

    def messages(self, turn: Turn, answer: str | None = None) -> list[StoredMessage]:
        """The turn as it is stored: the user message and the answer (``answer`` overrides the turn's)."""
        rid = turn.request_id[: self.REQUEST_ID_CHARS] if turn.request_id else None
        return [
            StoredMessage(
                turn.user_message_id,
                "user",
                turn.message,
                turn.received_at,
                request_id=rid,
                analysis=turn.analysis.to_dict() if turn.analysis else None,
                flagged=turn.analysis.safety.category if turn.analysis else None,
            ),
            StoredMessage(
                turn.message_id,
                "assistant",
                turn.answer if answer is None else answer,
                utcnow(),
                sources=list(turn.sources),
                latency_ms=round(turn.latency_ms, 2),
                degraded=turn.degraded,
                request_id=rid,
            ),
        ]

    def keep_unfinished(self, turn: Turn) -> bool:
        """Journal a turn a shutdown cannot wait for: the question and the answer as far as it got.

        Replay is idempotent by message id, so if the turn still completes and is stored, the
        journaled copy is skipped. Returns False when the turn was already stored.
        """
        if turn.persisted_to is not None or turn.session_id is None:
            return False
        answer = turn.answer or "".join(turn.partial)  # a snapshot: the turn may still be running
        msgs = self.messages(turn, answer.strip() or INTERRUPTED[turn.language])
        msgs[1].degraded = True
        self.journal.write(turn.session_id, turn.kb, turn.user_id, msgs, owner=turn.owner, new_session=turn.new_session)
        return True

    def __call__(self, turn: Turn) -> None:
        assert turn.session_id is not None
        msgs = self.messages(turn)
        try:
            store = self.writer if self.writer is not None else self.sessions
            turn.session_id = store.append(turn.session_id, turn.kb, turn.user_id, msgs, owner=turn.owner)
            turn.persisted_to = "database"
        except SQLAlchemyError as exc:
            if is_data_error(exc):
                log.warning("chat_turn_unstorable", extra={"error": describe(exc)})
                raise UnstorableTurn(f"the database refused this turn's text ({type(exc).__name__})") from exc
            metrics.DATABASE_ERRORS.labels("chat_persist").inc()
            self.keep(turn, msgs, exc)
            cause = "database unavailable" if is_outage(exc) else "database write failed"
            turn.degrade(f"{cause} ({type(exc).__name__}); turn journaled for replay")

    def keep(self, turn: Turn, msgs: list[StoredMessage], exc: BaseException) -> None:
        """Journal the turn for replay; if even that fails the turn cannot be accepted."""
        assert turn.session_id is not None
        msgs[1].degraded = True
        try:
            self.journal.write(
                turn.session_id, turn.kb, turn.user_id, msgs, owner=turn.owner, new_session=turn.new_session
            )
        except JournalFull:
            log.error("chat_turn_refused_journal_full", extra={"session_id": turn.session_id})
            raise  # a clear 503 with Retry-After: the turn is refused, never silently dropped
        except OSError as jexc:
            raise DependencyUnavailable(f"database and journal both failed: {exc}; {jexc}") from jexc
        turn.persisted_to = "journal"

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        return {semconv.SPAN_KIND: semconv.CHAIN, "ragvigil.persisted_to": turn.persisted_to}


class RecordContents(BaseStage):
    """Append the turn's text to the encrypted message log (only in the chain when enabled)."""

    name = "record"

    def __init__(self, message_log: EncryptedMessageLog) -> None:
        self.message_log = message_log

    def __call__(self, turn: Turn) -> None:
        record = turn_record(turn.session_id, turn.request_id, turn.user_id, turn.message, turn.answer)
        try:
            self.message_log.append(record)
        except OSError as exc:  # the answer is already persisted; losing the review copy is degraded, not fatal
            turn.degrade(f"message log unavailable: {exc}")


class ChatPipeline:
    """Runs the stages in order. ``stream`` runs the same chain, streaming the first ``StreamingStage``.

    ``observers`` (default: ``chat.observers.default_observers()``: stage metrics, spans and log lines,
    and the per-turn answer counts) hear about every stage and every turn. It keeps the turns in
    flight (``in_flight``), so a shutdown can journal those it cannot wait for.
    """

    def __init__(
        self,
        stages: list[Stage],
        stream_workers: int = 32,
        observers: Sequence[PipelineObserver] | None = None,
        features: FeatureGate | None = None,
    ) -> None:
        self.stages = stages
        self.features = features  # under load a stream relays its answer whole (``stream_extras`` shed)
        self.observers: tuple[PipelineObserver, ...] = ()
        self._stage_observers: tuple[PipelineObserver, ...] = ()  # the observers listening to each hook
        self._turn_observers: tuple[PipelineObserver, ...] = ()
        self._observe(default_observers() if observers is None else observers)
        self._in_flight: dict[str, Turn] = {}
        self._lock = threading.Lock()
        # streamed turns run here, detached from their response (bounded like the request thread pool)
        self._stream_workers = ThreadPoolExecutor(max_workers=stream_workers, thread_name_prefix="chat-stream")

    @contextmanager
    def _tracked(self, turn: Turn) -> Iterator[None]:
        with self._lock:
            self._in_flight[turn.message_id] = turn
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.pop(turn.message_id, None)

    def subscribe(self, observer: PipelineObserver) -> Callable[[], None]:
        """Add an observer at run time (a drill, a remediation check); returns the call that removes it.

        A turn already running keeps the observers it started with.
        """
        with self._lock:
            self._observe((*self.observers, observer))

        def unsubscribe() -> None:
            with self._lock:
                self._observe(tuple(o for o in self.observers if o is not observer))

        return unsubscribe

    def _observe(self, observers: Sequence[PipelineObserver]) -> None:
        self.observers = tuple(observers)
        self._stage_observers = listening(self.observers, "stage_finished")
        self._turn_observers = listening(self.observers, "turn_finished")

    def in_flight(self) -> list[Turn]:
        """Turns started and not yet finished (persisted or failed)."""
        with self._lock:
            return list(self._in_flight.values())

    def run(self, turn: Turn) -> Turn:
        with self._tracked(turn):
            return self._run(turn)

    def stream(self, turn: Turn, on_ready: Callable[[Turn], None] | None = None) -> Iterator[str]:
        """Yield answer deltas; ``on_ready`` is called once the turn is known (before the first delta).

        Whoever iterates this drives the turn: stop early and Persist never runs. An HTTP response
        uses ``start_stream`` instead.
        """
        with self._tracked(turn):
            for delta in self._stream(turn, on_ready):
                turn.partial.append(delta)
                yield delta

    def _run(self, turn: Turn) -> Turn:
        observers = self._stage_observers
        try:
            for stage in self.stages:
                with run_stage(stage, turn, observers):
                    stage(turn)
        finally:
            finish_turn(turn, self._turn_observers)
        return turn

    def _stream(self, turn: Turn, on_ready: Callable[[Turn], None] | None = None) -> Iterator[str]:
        idx = next(i for i, s in enumerate(self.stages) if isinstance(s, StreamingStage))
        observers, turn_observers = self._stage_observers, self._turn_observers
        try:
            for stage in self.stages[:idx]:
                with run_stage(stage, turn, observers):
                    stage(turn)
            if on_ready is not None:
                on_ready(turn)
            streaming = self.stages[idx]
            assert isinstance(streaming, StreamingStage)
            deltas = streaming.stream(turn)
            for later in self.stages[idx + 1 :]:
                if isinstance(later, StreamGuard):
                    deltas = later.guard(turn, deltas)
            sent: list[str] = []
            with run_stage(streaming, turn, observers):
                for delta in deltas:
                    sent.append(delta)
                    yield delta
            streamed = "".join(sent)
            for stage in self.stages[idx + 1 :]:
                with run_stage(stage, turn, observers):
                    stage(turn)
            if tail := _appended(streamed, turn.answer):
                yield tail  # what a later stage added to the answer (the hand-off notice) is streamed too
        finally:
            finish_turn(turn, turn_observers)

    def start_stream(self, turn: Turn) -> DetachedStream:
        """Run the streamed turn to its end in a worker; its events are relayed, and may be abandoned.

        Must be called on the event loop (the events are handed over through it).
        """
        whole = self.features is not None and not self.features.enabled("stream_extras")
        return DetachedStream(lambda on_ready: self.stream(turn, on_ready), self._stream_workers, whole=whole)

    def close(self) -> None:
        self._stream_workers.shutdown(wait=False)


def _appended(streamed: str, answer: str) -> str:
    """The part of the final answer a stage after the stream added to its end ("" when none was added)."""
    head = streamed.rstrip()
    if not head:
        return answer  # nothing was streamed (a settled empty answer): all of it came later
    if not answer.startswith(head) or len(answer) <= len(streamed):
        return ""
    return answer[len(streamed) :] if answer.startswith(streamed) else answer[len(head) :]
