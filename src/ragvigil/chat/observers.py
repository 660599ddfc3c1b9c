"""Observers of the chat pipeline: what a stage run or a finished turn means for metrics, traces and logs.

The pipeline only runs stages; whatever watches them subscribes here, like structlog's processor
chain or tenacity's before/after hooks, so a new stage (or a new kind of watcher) needs no edit in
the pipeline or in the other observers. Two hooks, with different timing on purpose:

- ``stage_finished(event)`` runs in the bookkeeping batch (``instrumentation.later``): the request
  pays for one queue append per stage, whatever the number of observers. It must read only the
  event and the fields of the turn that the stage wrote. Not called while instrumentation is off.
- ``turn_finished(turn)`` runs on the turn's own thread when its last stage is done, or when a
  stage raised, so it can add to the request's access line. Always called: answer counts are
  product metrics (the alert rules and ``bench/overhead.py`` read them), not instrumentation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ragvigil.ops import instrumentation, metrics, semconv, tracing
from ragvigil.ops.logging import attach_to_access_line

if TYPE_CHECKING:
    from ragvigil.chat.pipeline import Stage, Turn

__all__ = [
    "BaseObserver",
    "PipelineObserver",
    "StageEvent",
    "StageLog",
    "StageMetrics",
    "StageSpans",
    "TurnLog",
    "TurnMetrics",
    "default_observers",
    "deliver_stage",
    "listening",
    "notify_turn",
]

log = logging.getLogger("ragvigil.chat.pipeline")  # the stage lines keep the logger name they always had


class StageEvent:
    """One finished stage run: which stage, on which turn, how it ended and when (ns since the epoch)."""

    __slots__ = ("degraded", "end_ns", "error_type", "name", "outcome", "spans", "stage", "start_ns", "turn")

    def __init__(
        self,
        stage: Stage,
        turn: Turn,
        outcome: str,
        start_ns: int,
        end_ns: int,
        degraded: bool,
        spans: list[tracing.StageSpan] | None,
        error_type: str | None,
    ) -> None:
        self.stage = stage
        self.name = stage.name
        self.turn = turn
        self.outcome = outcome  # ok, degraded (the stage added a degraded reason) or error (it raised)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.degraded = degraded  # the turn's flag when the stage ended (it may grow later)
        self.spans = spans  # the request's span list, captured on the request's context (None: not traced)
        self.error_type = error_type  # the exception's class name when the stage raised

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class PipelineObserver(Protocol):
    """Something that watches the pipeline. See the module docstring for when each hook runs."""

    def stage_finished(self, event: StageEvent) -> None: ...

    def turn_finished(self, turn: Turn) -> None: ...


class BaseObserver:
    """Both hooks doing nothing: subclass it and override the one you need. The pipeline calls a
    ``BaseObserver``'s hook only when it is overridden (a hook runs per stage of every turn)."""

    def stage_finished(self, event: StageEvent) -> None:
        return None

    def turn_finished(self, turn: Turn) -> None:
        return None


def listening(observers: Sequence[PipelineObserver], hook: str) -> tuple[PipelineObserver, ...]:
    """The observers whose ``hook`` does something (all but a ``BaseObserver`` that kept the no-op)."""
    return tuple(o for o in observers if getattr(type(o), hook, None) is not getattr(BaseObserver, hook))


def deliver_stage(
    observers: Sequence[PipelineObserver],
    stage: Stage,
    turn: Turn,
    outcome: str,
    start_ns: int,
    end_ns: int,
    degraded: bool,
    spans: list[tracing.StageSpan] | None,
    error_type: str | None,
) -> None:
    """Build the event and hand it to every observer (run by ``instrumentation.later``: the event is made here,
    off the request path). An observer that raises is logged and skipped: watching never fails a turn."""
    event = StageEvent(stage, turn, outcome, start_ns, end_ns, degraded, spans, error_type)
    for observer in observers:
        try:
            observer.stage_finished(event)
        except Exception:
            _observer_failed(observer, "stage_finished")


def notify_turn(observers: Sequence[PipelineObserver], turn: Turn) -> None:
    """``turn_finished`` of every observer; one that raises is logged and skipped (the turn's answer stands)."""
    for observer in observers:
        try:
            observer.turn_finished(turn)
        except Exception:
            _observer_failed(observer, "turn_finished")


def _observer_failed(observer: PipelineObserver, hook: str) -> None:
    log.warning("pipeline_observer_failed", exc_info=True, extra={"observer": type(observer).__name__, "hook": hook})


class StageMetrics(BaseObserver):
    """Duration and outcome of every stage run, by stage name."""

    def stage_finished(self, event: StageEvent) -> None:
        metrics.child(metrics.STAGE_DURATION, event.name).observe((event.end_ns - event.start_ns) / 1e9)
        metrics.child(metrics.STAGE_OUTCOMES, event.name, event.outcome).inc()


class StageSpans(BaseObserver):
    """A span per stage with what the stage says about itself; the request's root span is the turn's CHAIN."""

    def stage_finished(self, event: StageEvent) -> None:
        spans = event.spans
        if spans is None:
            return
        attrs = event.stage.span_attributes(event.turn)
        attrs["ragvigil.stage.outcome"] = event.outcome
        attrs["ragvigil.degraded"] = event.degraded
        if event.error_type is not None:
            attrs[semconv.ERROR_TYPE] = event.error_type
        attrs = {k: v for k, v in attrs.items() if v is not None}  # OpenTelemetry refuses None
        spans.append((f"stage.{event.name}", event.start_ns, event.end_ns, attrs, event.outcome == "error"))

    def turn_finished(self, turn: Turn) -> None:
        """The question in, the answer out (their text only when contents are kept).

        Appended here rather than deferred: it is one append either way, and the request's trace is
        built only after its response, so nothing reads the list meanwhile.
        """
        if not instrumentation.enabled:
            return
        spans = tracing.current_spans.get()
        if spans is not None:
            answer = (turn.answer or None) if semconv.contents_captured() else None
            tracing.annotate_root(spans, {semconv.SPAN_KIND: semconv.CHAIN, **semconv.text_io(turn.message, answer)})


class StageLog(BaseObserver):
    """A DEBUG ``stage_done`` line per stage run (production logs INFO: these stay out of its files)."""

    def stage_finished(self, event: StageEvent) -> None:
        if log.isEnabledFor(logging.DEBUG):
            turn = event.turn
            ms = round((event.end_ns - event.start_ns) / 1e6, 2)
            ids = (turn.request_id, turn.session_id, turn.user_id)  # written off the request's context
            log.debug("stage_done", extra={"stage": event.name, "outcome": event.outcome, "ms": ms, "_ids": ids})


class TurnLog(BaseObserver):
    """Every stage's time on the request's access line, or on a ``chat_turn`` line of its own outside a request."""

    def turn_finished(self, turn: Turn) -> None:
        if not instrumentation.enabled:
            return
        fields: dict[str, Any] = {
            "stages_ms": turn.stages_ms,
            "sources": len(turn.sources),
            "degraded": turn.degraded,
            "persisted_to": turn.persisted_to,
        }
        if not attach_to_access_line(fields):
            log.info("chat_turn", extra={**fields, "ms": round(turn.latency_ms, 2)})


class TurnMetrics(BaseObserver):
    """What each turn found and answered: relevant hits per search, and the answer's kind.

    Counted from the turn, not from a stage: whichever stages found or answered, the counts mean the
    same. A turn that was never answered (a stage raised before one was made) is not an answer.
    """

    def turn_finished(self, turn: Turn) -> None:
        if turn.retrieval is not None:
            found = len(turn.retrieval.relevant_hits)
            metrics.RETRIEVAL_HITS.observe(found)
            if not found:
                metrics.RETRIEVAL_EMPTY.inc()
        if turn.settled_by is not None:
            kind = turn.settled_by  # what fixed the answer before retrieval, e.g. safe_mode
        elif turn.generation is not None:
            kind = "answered" if turn.sources else "no_answer"
        else:
            return
        metrics.CHAT_ANSWERS.labels(kind, "true" if turn.degraded else "false").inc()


def default_observers() -> list[PipelineObserver]:
    """The observers every pipeline has unless it is given its own."""
    return [StageMetrics(), StageSpans(), StageLog(), TurnLog(), TurnMetrics()]
