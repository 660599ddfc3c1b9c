"""Span attribute names from the semantic conventions that tracing tools read, and their small rules.

Why standard names: Jaeger, Tempo and Grafana read the OpenTelemetry HTTP conventions
(``http.request.method``, ``http.response.status_code``, ``http.route``, ``error.type``); Langfuse and
Datadog read the GenAI ones (``gen_ai.*``); Phoenix and Arize file a span by OpenInference's
``openinference.span.kind`` (CHAIN / RETRIEVER / LLM) and show ``input.value``, ``output.value`` and
``retrieval.documents.N.document.*``. Names of our own carry the ``ragvigil.`` prefix.

Conversation text (questions, answers, passages) goes on spans only when ``capture_contents`` was
switched on (``log_message_contents``): a trace store or collector is no place for it otherwise, so
documents are then listed by id and score alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# OpenTelemetry HTTP server spans (semantic conventions 1.2x+, stable)
HTTP_METHOD = "http.request.method"
HTTP_METHOD_ORIGINAL = "http.request.method_original"
HTTP_STATUS = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
PROTOCOL_VERSION = "network.protocol.version"
ERROR_TYPE = "error.type"

# OpenTelemetry GenAI
GENAI_OPERATION = "gen_ai.operation.name"
GENAI_PROVIDER = "gen_ai.provider.name"
GENAI_SYSTEM = "gen_ai.system"  # the older name of the provider, still what some backends read
GENAI_REQUEST_MODEL = "gen_ai.request.model"
GENAI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GENAI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GENAI_CONVERSATION = "gen_ai.conversation.id"

# OpenInference
SPAN_KIND = "openinference.span.kind"
CHAIN, RETRIEVER, LLM = "CHAIN", "RETRIEVER", "LLM"
INPUT_VALUE, INPUT_MIME = "input.value", "input.mime_type"
OUTPUT_VALUE, OUTPUT_MIME = "output.value", "output.mime_type"
SESSION_ID = "session.id"
LLM_MODEL = "llm.model_name"
LLM_PROVIDER = "llm.provider"
LLM_PROMPT_TOKENS = "llm.token_count.prompt"
LLM_COMPLETION_TOKENS = "llm.token_count.completion"
LLM_TOTAL_TOKENS = "llm.token_count.total"
DOCUMENTS = "retrieval.documents"

MAX_TEXT_CHARS = 4096  # one text attribute: a span stays small whatever a caller sent
MAX_DOCUMENTS = 20
MAX_PATH_CHARS = 1024
# RFC 9110 methods, PATCH and QUERY: anything else is "_OTHER" (the convention; keeps metric labels bounded)
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"})

_capture = False


def capture_contents(enabled: bool) -> None:
    """Allow conversation text on spans (set from ``log_message_contents`` when the runtime starts)."""
    global _capture
    _capture = enabled


def contents_captured() -> bool:
    return _capture


def http_method(method: str) -> str:
    """The method as the convention names it: a known one as is, anything else ``_OTHER``."""
    return method if method in KNOWN_METHODS else "_OTHER"


def text(value: str) -> str:
    return value if len(value) <= MAX_TEXT_CHARS else value[:MAX_TEXT_CHARS]


def text_io(question: str | None, answer: str | None) -> dict[str, Any]:
    """``input.value`` / ``output.value`` as plain text, or nothing while contents are not captured."""
    if not _capture:
        return {}
    out: dict[str, Any] = {}
    if question is not None:
        out[INPUT_VALUE], out[INPUT_MIME] = text(question), "text/plain"
    if answer is not None:
        out[OUTPUT_VALUE], out[OUTPUT_MIME] = text(answer), "text/plain"
    return out


def documents(docs: Iterable[tuple[str, float, str, dict[str, Any]]]) -> dict[str, Any]:
    """OpenInference's flattened ``retrieval.documents.N.document.*`` from (id, score, content, metadata).

    The content only while contents are captured; the id, score and metadata always.
    """
    out: dict[str, Any] = {}
    for i, (doc_id, score, content, metadata) in enumerate(docs):
        if i == MAX_DOCUMENTS:
            break
        prefix = f"{DOCUMENTS}.{i}.document."
        out[prefix + "id"] = doc_id
        out[prefix + "score"] = float(score)
        if metadata:
            out[prefix + "metadata"] = json.dumps(metadata, ensure_ascii=False, default=str)
        if _capture:
            out[prefix + "content"] = text(content)
    return out
