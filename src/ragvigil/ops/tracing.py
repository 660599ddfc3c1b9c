"""Spans of each request and pipeline stage: a bounded in-process store, exported over OTLP on demand.

The store answers "where did the time of request X go" from the service itself
(``GET /api/v1/traces/{request_id}``); an OTLP exporter can be added by configuration for Jaeger,
Tempo, Phoenix or Langfuse, and receives standard OpenTelemetry spans (W3C trace and span ids,
parentage, a caller's ``traceparent`` continued). Their attributes follow the OpenTelemetry HTTP and
GenAI semantic conventions and OpenInference's span kinds (names in ``ragvigil.ops.semconv``), so
those tools read them as they are.

The store is keyed by the request id the server made, never by an id the caller sent: two callers
sending the same ``X-Request-ID`` get two traces, each kept with who made it (``owner``).

Why the request path does not call the OpenTelemetry SDK tracer: an SDK span costs ~15-20 µs
(sampler, context attach, processors) and a chat turn has six, which alone is ~2 % of a cached
turn's CPU against a budget of 3 % for metrics, traces and logs together (``bench/overhead.py``).
Here a finished stage is a tuple appended to the request's list (``current_spans``); the trace —
small span records — is built from them after the response, off the request path
(``instrumentation.later``), and the records become SDK ``ReadableSpan`` objects only when an
exporter is configured, and dicts only when someone reads them.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from contextvars import ContextVar
from random import getrandbits
from typing import Any, NamedTuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ragvigil.ops import instrumentation

REQUEST_ID_ATTR = "ragvigil.request_id"
CLIENT_REQUEST_ID_ATTR = "ragvigil.client_request_id"  # the caller's X-Request-ID, kept beside ours
_ROOT = ""  # a stage tuple of this name holds attributes for the root span (``annotate_root``), not a span
_TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


class SpanRecord:
    """One finished or running span: what OpenTelemetry would export, without its machinery."""

    __slots__ = ("attributes", "end_ns", "error", "name", "parent_id", "span_id", "start_ns")

    def __init__(self, name: str, parent_id: int | None, start_ns: int, attributes: dict[str, Any]) -> None:
        self.name = name
        self.span_id = getrandbits(64) or 1
        self.parent_id = parent_id
        self.start_ns = start_ns
        self.end_ns = start_ns
        self.error = False
        self.attributes = attributes

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "span_id": f"{self.span_id:016x}",
            "parent_id": f"{self.parent_id:016x}" if self.parent_id is not None else None,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ms": round((self.end_ns - self.start_ns) / 1e6, 3),
            "status": "error" if self.error else "unset",
            "attributes": dict(self.attributes),
        }


class RequestTrace:
    """The spans of one request: the root (the HTTP request) and one child per pipeline stage.

    Built after the request from its stage tuples (``current_spans``, filled by the stages, which may
    run in a worker thread: the context variable is copied into it and ``list.append`` is atomic).
    """

    __slots__ = ("client_request_id", "owner", "remote_parent", "request_id", "root", "spans", "trace_id")

    def __init__(
        self,
        request_id: str,
        name: str,
        traceparent: bytes | None = None,
        start_ns: int | None = None,
        *,
        owner: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.owner = owner  # who made the request (``api.middleware.trace_owner``); None: nobody known
        self.client_request_id = client_request_id
        self.trace_id, self.remote_parent = _continue(traceparent)
        start = time.time_ns() if start_ns is None else start_ns
        self.root = SpanRecord(name, self.remote_parent, start, {REQUEST_ID_ATTR: request_id})
        if client_request_id is not None:
            self.root.attributes[CLIENT_REQUEST_ID_ATTR] = client_request_id
        self.spans = [self.root]

    def add_child(self, name: str, start_ns: int, end_ns: int, attributes: dict[str, Any], error: bool) -> None:
        if name == _ROOT:
            self.root.attributes.update(attributes)
            return
        span = SpanRecord(name, self.root.span_id, start_ns, attributes)
        span.end_ns = end_ns
        span.error = error
        self.spans.append(span)

    def as_dicts(self) -> list[dict[str, Any]]:
        out = []
        for span in sorted(self.spans, key=lambda s: s.start_ns):
            d = span.as_dict()
            d["kind"] = "server" if span is self.root else "internal"
            out.append(d)
        return out


def _continue(traceparent: bytes | None) -> tuple[int, int | None]:
    """The caller's trace id and parent span from a W3C ``traceparent`` header, else a new trace."""
    if traceparent:
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if m and int(m.group(1), 16) and int(m.group(2), 16):
            return int(m.group(1), 16), int(m.group(2), 16)
    return getrandbits(128) or 1, None


# The finished stages of the current request, (name, start_ns, end_ns, attributes, error): the request
# path only appends; the trace is built from them off the request path (``instrumentation.later``).
StageSpan = tuple[str, int, int, dict[str, Any], bool]
current_spans: ContextVar[list[StageSpan] | None] = ContextVar("ragvigil_stage_spans", default=None)


def annotate_root(spans: list[StageSpan], attributes: dict[str, Any]) -> None:
    """Add attributes to the request's root span from a stage (e.g. a chat turn's question and answer)."""
    spans.append((_ROOT, 0, 0, attributes, False))


class FinishedRequest(NamedTuple):
    """What a finished request's trace is built from, when someone asks for it."""

    request_id: str
    name: str
    traceparent: bytes | None
    start_ns: int
    end_ns: int
    error: bool
    attributes: dict[str, Any]
    spans: list[StageSpan]
    owner: str | None = None
    client_request_id: str | None = None

    def build(self) -> RequestTrace:
        trace = RequestTrace(
            self.request_id,
            self.name,
            self.traceparent,
            self.start_ns,
            owner=self.owner,
            client_request_id=self.client_request_id,
        )
        root = trace.root
        root.attributes.update(self.attributes)
        for span in self.spans:
            trace.add_child(*span)
        root.end_ns, root.error = self.end_ns, self.error
        return trace


def keep(finished: FinishedRequest) -> None:
    """Keep a finished request's trace: built at once only for an exporter, else on first read.

    Almost no stored trace is ever read; building span records (ids, attributes) for each request
    was most of what the trace store cost.
    """
    if _EXPORTERS:
        trace = finished.build()
        RECENT.add(trace)
        _export(trace)
    else:
        RECENT.add(finished)


class RecentTraces:
    """The traces of the last ``max_requests`` requests, by request id; the oldest are dropped."""

    def __init__(self, max_requests: int = 500) -> None:
        self.max_requests = max_requests
        self._by_request: OrderedDict[str, RequestTrace | FinishedRequest] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, trace: RequestTrace | FinishedRequest) -> None:
        with self._lock:
            if trace.request_id in self._by_request:  # the first trace under an id stays; ids are server-made
                return
            self._by_request[trace.request_id] = trace
            while len(self._by_request) > self.max_requests:
                self._by_request.popitem(last=False)

    def get(self, request_id: str) -> RequestTrace | None:
        """The request's trace with its owner, for a caller that checks who may read it; None when not kept."""
        instrumentation.drain()  # traces still queued by the request path
        with self._lock:
            trace = self._by_request.get(request_id)
            if isinstance(trace, FinishedRequest):
                trace = self._by_request[request_id] = trace.build()  # built once: ids stay the same
        return trace

    def for_request(self, request_id: str) -> list[dict[str, Any]] | None:
        """Spans of the request in start order, or None when unknown or already evicted (no access check)."""
        trace = self.get(request_id)
        return trace.as_dicts() if trace is not None else None

    def trace_id(self, request_id: str) -> str | None:
        trace = self.get(request_id)
        return f"{trace.trace_id:032x}" if trace is not None else None


RECENT = RecentTraces()
_RESOURCE = Resource.create({"service.name": "ragvigil"})
_SCOPE = InstrumentationScope("ragvigil")
_EXPORTERS: dict[str, BatchSpanProcessor] = {}


def _readable(trace: RequestTrace, span: SpanRecord) -> ReadableSpan:
    is_root = span is trace.root
    parent = None
    if span.parent_id is not None:
        remote = is_root  # only the root's parent lives in another service
        parent = SpanContext(trace.trace_id, span.parent_id, is_remote=remote, trace_flags=TraceFlags(1))
    return ReadableSpan(
        name=span.name,
        context=SpanContext(trace.trace_id, span.span_id, is_remote=False, trace_flags=TraceFlags(1)),
        parent=parent,
        resource=_RESOURCE,
        attributes=span.attributes,
        kind=SpanKind.SERVER if is_root else SpanKind.INTERNAL,
        status=Status(StatusCode.ERROR) if span.error else Status(StatusCode.UNSET),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=_SCOPE,
    )


def _export(trace: RequestTrace) -> None:
    """Hand the trace's spans to every OTLP exporter (they batch and send from their own thread)."""
    spans = [_readable(trace, s) for s in trace.spans]
    for proc in list(_EXPORTERS.values()):
        for span in spans:
            proc.on_end(span)


def enable_otlp(endpoint: str) -> None:
    """Also export spans over OTLP/HTTP (e.g. http://collector:4318/v1/traces); once per endpoint."""
    if endpoint in _EXPORTERS:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    _EXPORTERS[endpoint] = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5))


def otlp_endpoints() -> frozenset[str]:
    """The endpoints spans are exported to right now."""
    return frozenset(_EXPORTERS)


def disable_otlp(endpoint: str) -> None:
    proc = _EXPORTERS.pop(endpoint, None)
    if proc is not None:
        proc.shutdown()


def flush(timeout_millis: int = 30000) -> bool:
    """Send what the exporters have queued (at shutdown, and in tests)."""
    return all(p.force_flush(timeout_millis) for p in list(_EXPORTERS.values()))
