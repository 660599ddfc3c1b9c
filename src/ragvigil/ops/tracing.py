"""OpenTelemetry spans for each request and pipeline stage, kept in a bounded in-process store.

The store answers "where did the time of request X go" from the service itself
(``GET /api/v1/traces/{request_id}``); an OTLP exporter can be added by configuration for
Jaeger, Tempo, Phoenix or Langfuse. One tracer provider per process, created here, so that
several runtimes in one process (tests) share it instead of fighting over the global one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Tracer

REQUEST_ID_ATTR = "ragvigil.request_id"


class RecentSpans(SpanProcessor):
    """Finished spans grouped by the request id of their trace; the oldest requests are dropped."""

    def __init__(self, max_requests: int = 500) -> None:
        self.max_requests = max_requests
        # the finished spans themselves: turning them into dicts is left to the rare reader
        self._by_trace: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._trace_of_request: dict[str, int] = {}
        self._requests_of_trace: dict[int, str] = {}
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.get_span_context()
        if ctx is None:
            return
        rid = (span.attributes or {}).get(REQUEST_ID_ATTR)
        with self._lock:
            spans = self._by_trace.get(ctx.trace_id)
            if spans is None:
                spans = self._by_trace[ctx.trace_id] = []
            spans.append(span)
            if rid:
                self._trace_of_request[str(rid)] = ctx.trace_id
                self._requests_of_trace[ctx.trace_id] = str(rid)
            while len(self._by_trace) > self.max_requests:
                old, _ = self._by_trace.popitem(last=False)
                old_rid = self._requests_of_trace.pop(old, None)
                if old_rid is not None and self._trace_of_request.get(old_rid) == old:
                    del self._trace_of_request[old_rid]

    def for_request(self, request_id: str) -> list[dict[str, Any]] | None:
        """Spans of the request in start order, or None when unknown or already evicted."""
        with self._lock:
            trace_id = self._trace_of_request.get(request_id)
            spans = list(self._by_trace.get(trace_id) or ()) if trace_id is not None else []
        if not spans:
            return None
        return [_as_dict(s) for s in sorted(spans, key=lambda s: s.start_time or 0)]

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Exporters(SpanProcessor):
    """OTLP exporters that can be added and removed at run time (the SDK only ever adds)."""

    def __init__(self) -> None:
        self.by_endpoint: dict[str, BatchSpanProcessor] = {}

    def on_end(self, span: ReadableSpan) -> None:
        for proc in list(self.by_endpoint.values()):
            proc.on_end(span)

    def shutdown(self) -> None:
        for endpoint in list(self.by_endpoint):
            disable_otlp(endpoint)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in list(self.by_endpoint.values()))


def _as_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    return {
        "name": span.name,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "duration_ms": round(((span.end_time or 0) - (span.start_time or 0)) / 1e6, 3),
        "status": span.status.status_code.name.lower(),
        "attributes": dict(span.attributes or {}),
    }


RECENT = RecentSpans()
_EXPORTERS = _Exporters()
_PROVIDER = TracerProvider(resource=Resource.create({"service.name": "ragvigil"}))
_PROVIDER.add_span_processor(RECENT)
_PROVIDER.add_span_processor(_EXPORTERS)


def tracer() -> Tracer:
    return _PROVIDER.get_tracer("ragvigil")


def enable_otlp(endpoint: str) -> None:
    """Also export spans over OTLP/HTTP (e.g. http://collector:4318/v1/traces); once per endpoint."""
    if endpoint in _EXPORTERS.by_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    _EXPORTERS.by_endpoint[endpoint] = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5))


def disable_otlp(endpoint: str) -> None:
    proc = _EXPORTERS.by_endpoint.pop(endpoint, None)
    if proc is not None:
        proc.shutdown()


def flush() -> bool:
    return _PROVIDER.force_flush()


def set_attributes(span: Span, **attrs: Any) -> None:
    """Set the attributes that have a value (OpenTelemetry refuses None)."""
    for key, value in attrs.items():
        if value is not None:
            span.set_attribute(key, value)
