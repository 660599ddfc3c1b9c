"""The pipeline's shape: stages describe their spans, observers do the bookkeeping, a settled turn skips work,
and the light types import nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.chat.observers import StageEvent
from ragvigil.chat.pipeline import (
    BaseStage,
    ChatPipeline,
    Generate,
    LoadHistory,
    Retrieve,
    StreamingStage,
    Turn,
)
from ragvigil.ops import metrics
from tests.conftest import ROOT

SAFE = "We are answering a limited set of questions right now; a person will follow up."


class Settle(BaseStage):
    """The tiniest stage that fixes the answer before retrieval (what safe mode will do)."""

    name = "settle"

    def __call__(self, turn: Turn) -> None:
        turn.answer = SAFE
        turn.settled_by = self.name

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        return {"ragvigil.settle.marker": "fixed", "ragvigil.settle.none": None}


class Recorder:
    """An observer that remembers what it heard."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, str, str]] = []
        self.turns: list[str] = []

    def stage_finished(self, event: StageEvent) -> None:
        self.stages.append((event.name, event.outcome, event.turn.message_id))

    def turn_finished(self, turn: Turn) -> None:
        self.turns.append(turn.message_id)


def _with_settle(rt: Runtime) -> None:
    stages = rt.pipeline.stages
    at = next(i for i, s in enumerate(stages) if isinstance(s, LoadHistory)) + 1
    stages.insert(at, Settle())


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_settled_turn_skips_retrieval_and_generation_and_is_still_persisted(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    _with_settle(rt)
    settled_before = _sample("ragvigil_chat_answers_total", {"kind": "settle", "degraded": "false"})
    retrievals_before = _sample("ragvigil_retrieval_relevant_hits_count")
    turn = rt.pipeline.run(Turn(message="专业版年付多少钱？", kb="default"))
    assert turn.settled_by == "settle" and turn.answer == SAFE
    assert turn.retrieval is None and turn.generation is None and turn.sources == []  # neither stage ran
    assert not turn.degraded and turn.degraded_reasons == []  # skipping is not degradation
    assert turn.persisted_to == "database"
    stored = rt.sessions.messages(turn.session_id)
    assert [(m.role, m.content) for m in stored] == [("user", "专业版年付多少钱？"), ("assistant", SAFE)]
    assert _sample("ragvigil_chat_answers_total", {"kind": "settle", "degraded": "false"}) == settled_before + 1
    assert _sample("ragvigil_retrieval_relevant_hits_count") == retrievals_before  # no search was made
    ok = {"stage": "retrieve", "outcome": "ok"}
    assert _sample("ragvigil_stage_outcomes_total", ok) >= 1  # the stage ran (and did nothing)

    # the same question without the settling stage is answered from the knowledge base
    rt.pipeline.stages = [s for s in rt.pipeline.stages if not isinstance(s, Settle)]
    answered = rt.pipeline.run(Turn(message="专业版年付多少钱？", kb="default"))
    assert answered.settled_by is None and answered.retrieval is not None and "268" in answered.answer


def test_a_settled_turn_streams_its_fixed_answer(sample_runtime: Runtime) -> None:
    _with_settle(sample_runtime)
    turn = Turn(message="How do I export my notes?", kb="default")
    deltas = list(sample_runtime.pipeline.stream(turn))
    assert deltas == [SAFE] and turn.persisted_to == "database" and turn.retrieval is None


def test_a_new_stage_gets_its_span_and_metrics_without_edits_elsewhere(
    client: TestClient, sample_runtime: Runtime
) -> None:
    _with_settle(sample_runtime)
    before = _sample("ragvigil_stage_outcomes_total", {"stage": "settle", "outcome": "ok"})
    r = client.post("/api/v1/chat", json={"message": "How do I export my notes?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == SAFE and body["degraded"] is False and body["sources"] == []
    # persisted: the session shows the fixed answer
    messages = client.get(f"/api/v1/sessions/{body['session_id']}/messages").json()
    assert [m["content"] for m in messages] == ["How do I export my notes?", SAFE]

    trace = client.get(f"/api/v1/traces/{r.headers['x-request-id']}").json()
    spans = {s["name"]: s["attributes"] for s in trace["spans"][1:]}
    stages = ["stage.history", "stage.settle", "stage.understand", "stage.safe_mode", "stage.retrieve"]
    stages += ["stage.small_talk", "stage.handoff_request", "stage.generate", "stage.answer_check"]
    stages += ["stage.handoff", "stage.persist"]
    assert list(spans) == stages
    assert spans["stage.settle"]["ragvigil.settle.marker"] == "fixed"
    assert "ragvigil.settle.none" not in spans["stage.settle"]  # None values are left out for OpenTelemetry
    assert spans["stage.generate"]["openinference.span.kind"] == "CHAIN"  # no model was asked
    assert spans["stage.generate"]["ragvigil.settled_by"] == "settle"
    assert trace["spans"][0]["attributes"]["openinference.span.kind"] == "CHAIN"
    assert _sample("ragvigil_stage_outcomes_total", {"stage": "settle", "outcome": "ok"}) == before + 1


def test_observers_hear_every_stage_and_every_turn_and_own_the_answer_counts(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    recorder = Recorder()
    quiet = ChatPipeline(rt.pipeline.stages, observers=[recorder])
    answered = {"kind": "answered", "degraded": "false"}
    counted = _sample("ragvigil_chat_answers_total", answered)
    hits = _sample("ragvigil_retrieval_relevant_hits_count")
    try:
        turn = quiet.run(Turn(message="专业版年付多少钱？", kb="default"))
    finally:
        quiet.close()
    assert "268" in turn.answer
    names = [s.name for s in rt.pipeline.stages]
    assert recorder.stages == [(n, "ok", turn.message_id) for n in names]
    assert recorder.turns == [turn.message_id]
    # no counting inside the stages: a pipeline without the metric observers leaves the counts alone
    assert _sample("ragvigil_chat_answers_total", answered) == counted
    assert _sample("ragvigil_retrieval_relevant_hits_count") == hits

    rt.pipeline.run(Turn(message="专业版年付多少钱？", kb="default"))  # the default observers count it
    assert _sample("ragvigil_chat_answers_total", answered) == counted + 1
    assert _sample("ragvigil_retrieval_relevant_hits_count") == hits + 1


def test_an_observer_subscribed_at_run_time_hears_turns_until_it_unsubscribes(sample_runtime: Runtime) -> None:
    recorder = Recorder()
    unsubscribe = sample_runtime.pipeline.subscribe(recorder)
    heard = sample_runtime.pipeline.run(Turn(message="How do I export my notes?", kb="default"))
    unsubscribe()
    sample_runtime.pipeline.run(Turn(message="How do I export my notes?", kb="default"))
    assert recorder.turns == [heard.message_id]
    assert [name for name, _, _ in recorder.stages] == [s.name for s in sample_runtime.pipeline.stages]


def test_an_observer_that_raises_never_fails_the_turn(sample_runtime: Runtime) -> None:
    class Clumsy:
        def stage_finished(self, event: StageEvent) -> None:
            raise KeyError(event.name)

        def turn_finished(self, turn: Turn) -> None:
            raise KeyError(turn.message_id)

    recorder = Recorder()
    pipeline = ChatPipeline(sample_runtime.pipeline.stages, observers=[Clumsy(), recorder])
    try:
        turn = pipeline.run(Turn(message="专业版年付多少钱？", kb="default"))
    finally:
        pipeline.close()
    assert turn.persisted_to == "database" and "268" in turn.answer
    assert len(recorder.stages) == len(sample_runtime.pipeline.stages) and recorder.turns == [turn.message_id]


def test_a_failing_stage_is_reported_and_the_turn_still_finishes(sample_runtime: Runtime) -> None:
    class Broken(BaseStage):
        name = "broken"

        def __call__(self, turn: Turn) -> None:
            raise RuntimeError("boom")

    recorder = Recorder()
    pipeline = ChatPipeline([*sample_runtime.pipeline.stages[:1], Broken()], observers=[recorder])
    turn = Turn(message="hello", kb="default")
    try:
        try:
            pipeline.run(turn)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the stage's error must reach the caller")
    finally:
        pipeline.close()
    assert recorder.stages == [("history", "ok", turn.message_id), ("broken", "error", turn.message_id)]
    assert recorder.turns == [turn.message_id]  # its log line and counts are still written


def test_streaming_is_a_protocol_found_by_isinstance(sample_runtime: Runtime) -> None:
    generate = next(s for s in sample_runtime.pipeline.stages if isinstance(s, Generate))
    retrieve = next(s for s in sample_runtime.pipeline.stages if isinstance(s, Retrieve))
    assert isinstance(generate, StreamingStage) and not isinstance(retrieve, StreamingStage)

    class Echo(BaseStage):
        """A streaming stage that is not Generate: the pipeline streams it all the same."""

        name = "echo"

        def __call__(self, turn: Turn) -> None:
            turn.answer = turn.message

        def stream(self, turn: Turn) -> Iterator[str]:
            yield from turn.message.split()
            turn.answer = turn.message

    class NotStreaming(BaseStage):
        """Has a ``stream`` attribute, but it is not a method: opted out (hasattr would have said yes)."""

        name = "plain"
        stream = None

        def __call__(self, turn: Turn) -> None:
            turn.answer += "!"

    assert not isinstance(NotStreaming(), StreamingStage)
    pipeline = ChatPipeline([NotStreaming(), Echo()], observers=[])
    try:
        turn = Turn(message="one two three", kb="default")
        assert list(pipeline.stream(turn)) == ["one", "two", "three"]
    finally:
        pipeline.close()


def test_the_light_types_and_the_generator_interface_import_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import ragvigil.providers.base, ragvigil.types, ragvigil.errors\n"
        "print(json.dumps(sorted(m for m in ('faiss', 'sqlalchemy', 'jieba', 'numpy', 'fastapi') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60
    ).stdout
    assert json.loads(out) == []


def test_the_old_import_paths_still_work() -> None:
    from ragvigil import types
    from ragvigil.chat import pipeline
    from ragvigil.knowledge import retrieval
    from ragvigil.providers import base

    assert retrieval.Hit is base.Hit is types.Hit
    assert retrieval.Retrieval is types.Retrieval
    assert base.GenerationRequest is types.GenerationRequest and base.Generation is types.Generation
    assert pipeline.Hit is types.Hit and pipeline.Generation is types.Generation
