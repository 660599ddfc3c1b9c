"""Batched log writing: nothing lost, order kept, errors written at once, ids from the logging context."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from ragvigil.ops.logging import configure_logging, request_id_var, reset_logging
from ragvigil.ops.logwriter import BatchingHandler, DeferredFlush


class _Stream(DeferredFlush, logging.StreamHandler):  # type: ignore[type-arg]
    """Counts how often the stream was really flushed."""

    flushes = 0

    def flush(self) -> None:
        if not self._holding:
            self.flushes += 1
        super().flush()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("ragvigil.test.logwriter")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_info_waits_for_the_batch_and_an_error_writes_everything_before_it(logger: logging.Logger) -> None:
    stream = io.StringIO()
    target = _Stream(stream)
    handler = BatchingHandler([target], interval=3600)  # the writer thread never wakes during the test
    logger.addHandler(handler)
    logger.info("one")
    logger.warning("two %s", "args")
    assert _lines(stream) == []  # queued, not written by the logging thread
    logger.error("three")
    assert _lines(stream) == ["one", "two args", "three"]  # the error and all before it, in order
    assert target.flushes == 1  # one flush for the batch, not one per line
    logger.info("four")
    logger.removeHandler(handler)
    handler.close()  # what logging.shutdown does at exit
    assert _lines(stream) == ["one", "two args", "three", "four"]


def test_the_writer_thread_writes_without_an_error_to_push_it(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = BatchingHandler([logging.StreamHandler(stream)], interval=0.01)
    logger.addHandler(handler)
    logger.info("queued")
    deadline = time.monotonic() + 5
    while not _lines(stream) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _lines(stream) == ["queued"]


def test_each_target_keeps_its_level(logger: logging.Logger) -> None:
    everything, errors = io.StringIO(), io.StringIO()
    error_target = logging.StreamHandler(errors)
    error_target.setLevel(logging.ERROR)
    handler = BatchingHandler([logging.StreamHandler(everything), error_target], interval=3600)
    logger.addHandler(handler)
    logger.info("chatter")
    logger.critical("boom")
    assert _lines(everything) == ["chatter", "boom"] and _lines(errors) == ["boom"]


def test_a_full_queue_is_written_by_the_logging_thread(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(BatchingHandler([logging.StreamHandler(stream)], interval=3600, max_pending=3))
    for i in range(7):
        logger.info("line %d", i)
    assert _lines(stream) == [f"line {i}" for i in range(6)]  # two full batches; the 7th waits


def test_ids_are_those_of_the_request_that_logged_not_of_the_writer() -> None:
    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream, flush_interval=3600)
    try:
        token = request_id_var.set("req-7")
        logging.getLogger("ragvigil.test").info("inside", extra={"route": "/x"})
        request_id_var.reset(token)
        logging.getLogger("ragvigil.test").info("outside")
        assert stream.getvalue() == ""
    finally:
        reset_logging()  # writes what is queued, formatted after the request's context is gone
    lines = [json.loads(x) for x in _lines(stream)]
    assert [(x["event"], x["request_id"]) for x in lines] == [("inside", "req-7"), ("outside", None)]
    assert lines[0]["route"] == "/x"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_deferred_record_is_made_by_the_writer_with_the_time_and_ids_of_the_call(logger: logging.Logger) -> None:
    collect = _Collect()
    handler = BatchingHandler([collect], interval=3600)
    logger.addHandler(handler)
    before = time.time()
    handler.defer(logger, logging.INFO, "deferred", {"route": "/x"}, ("req-1", "s-1", None))
    logger.info("later")
    assert collect.records == []
    handler.flush()
    first, second = collect.records  # in time order although the deferred record was made last
    assert (first.getMessage(), second.getMessage()) == ("deferred", "later")
    assert before <= first.created <= second.created
    assert first.route == "/x" and first._ids == ("req-1", "s-1", None)  # type: ignore[attr-defined]


def test_the_access_line_goes_through_the_writer_and_every_handler_sees_it() -> None:
    from ragvigil.ops.logging import log_access

    stream, other = io.StringIO(), _Collect()
    logging.getLogger("ragvigil.access").addHandler(other)
    configure_logging("INFO", None, stream=stream, flush_interval=3600)
    try:
        token = request_id_var.set("req-9")
        log_access({"route": "/api/v1/chat", "status": 200})
        request_id_var.reset(token)
        assert other.records == [] and stream.getvalue() == ""
    finally:
        reset_logging()
        logging.getLogger("ragvigil.access").removeHandler(other)
    line = json.loads(stream.getvalue())
    assert (line["event"], line["request_id"], line["status"]) == ("http_request", "req-9", 200)
    assert [r.getMessage() for r in other.records] == ["http_request"]


def test_metrics_and_spans_queued_by_requests_are_applied_before_anyone_reads_them() -> None:
    from ragvigil.ops import instrumentation, metrics, tracing

    counter = metrics.child(metrics.STAGE_OUTCOMES, "history", "ok")
    configure_logging("INFO", None, stream=io.StringIO(), flush_interval=3600)  # the writer never wakes here
    try:
        before = metrics.REGISTRY.get_sample_value(
            "ragvigil_stage_outcomes_total", {"stage": "history", "outcome": "ok"}
        )
        instrumentation.later(counter.inc)
        now = time.time_ns()
        finished = tracing.FinishedRequest("req-deferred", "GET /x", None, now, now + 1000, False, {}, [])
        instrumentation.later(tracing.keep, finished)
        assert counter._value.get() == before  # queued, not applied
        after = metrics.REGISTRY.get_sample_value(
            "ragvigil_stage_outcomes_total", {"stage": "history", "outcome": "ok"}
        )
        assert after == before + 1  # a collection (a /metrics scrape, the alert sampler) applies the queue first
        spans = tracing.RECENT.for_request("req-deferred")  # so does the trace store
        assert spans is not None and spans[0]["name"] == "GET /x"
    finally:
        reset_logging()
    instrumentation.later(counter.inc)  # no writer: applied at once
    assert (
        metrics.REGISTRY.get_sample_value("ragvigil_stage_outcomes_total", {"stage": "history", "outcome": "ok"})
        == after + 1
    )


def test_an_access_line_with_a_field_outside_the_safe_set_is_still_redacted() -> None:
    from ragvigil.ops.logging import log_access

    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream, flush_interval=3600)
    try:
        log_access({"route": "/x", "status": 200})
        log_access({"route": "/x", "status": 200, "note": "ask bob@example.com"})
    finally:
        reset_logging()
    safe, unsafe = (json.loads(x) for x in _lines(stream))
    assert safe["route"] == "/x" and "_redacted" not in safe
    assert "bob@example.com" not in unsafe["note"] and "[EMAIL]" in unsafe["note"]


def test_a_failing_batch_job_neither_raises_into_the_caller_nor_loses_the_lines(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise RuntimeError("bookkeeping bug")

    stream = io.StringIO()
    handler = BatchingHandler([logging.StreamHandler(stream)], interval=3600, before_flush=broken)
    logger.addHandler(handler)
    logger.info("queued")
    logger.error("written at once")  # flushes in this thread: the broken job must not raise here
    assert _lines(stream) == ["queued", "written at once"]
    assert "bookkeeping bug" in capsys.readouterr().err
