"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema, field_validator, model_validator

from ragvigil.config import Settings
from ragvigil.storage.text import StorableText

KB_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class ChatRequest(BaseModel):
    # StorableText: a NUL or a lone surrogate is a 422 here, not a failed database write later
    message: StorableText = Field(
        ...,
        min_length=1,
        description="The user's question (not blank)",
        json_schema_extra={"pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"},  # no NUL, something not blank
    )
    session_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    user_id: StorableText | None = Field(None, max_length=128)
    kb: str | None = Field(None, pattern=KB_PATTERN)

    @field_validator("message")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message must not be blank")
        return v


class Source(BaseModel):
    n: int
    document_id: str
    chunk_id: int
    title: str
    source: str
    anchor: str
    score: float
    bm25_score: float | None
    vector_score: float | None
    cited: bool
    snippet: str
    quality: Literal["repaired", "damaged", "released"] | None = Field(
        None,
        description="a quality warning on the source's document: `repaired` (its encoding was repaired, nothing "
        "measurably lost), `damaged` (some characters were lost, too few to quarantine it), `released` (it was "
        "quarantined for lost characters and an operator released it); null for a clean document",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="the document's quality warnings from ingestion, as the documents API lists them",
    )


class SafetyOut(BaseModel):
    category: str | None = Field(
        None, description="self_harm, violence, harassment, sexual_minors, illegal; null: nothing found"
    )
    severity: str = Field("none", description="none, low, medium, high or critical")


class EmotionOut(BaseModel):
    label: str = Field(..., description="joy, sadness, anger, fear, disgust, surprise or neutral")
    polarity: str = Field(..., description="very_negative, negative, neutral, positive or very_positive")
    score: float = Field(..., description="the polarity in [-1, 1]")


class IntentOut(BaseModel):
    name: str = Field(..., description="an intent of the intents file; other when out of scope")
    confidence: float


class AnalysisOut(BaseModel):
    """What was understood of the user's message (a part is null when its checker is not configured)."""

    safety: SafetyOut
    emotion: EmotionOut | None = None
    intent: IntentOut | None = None


class HandoffOut(BaseModel):
    id: str | None = Field(None, description="the hand-off record's id")
    reason: str = Field(..., description="crisis, complaint, human_request, negative_trend, repeated_no_answer")
    priority: int = Field(..., description="1 (crisis, first) .. 4")


class ChatResponse(BaseModel):
    session_id: str
    message_id: str
    answer: str
    sources: list[Source]
    degraded: bool
    degraded_reasons: list[str] = []
    provider: str | None = None  # which provider answered (none: no passage, nothing was asked)
    latency_ms: float
    analysis: AnalysisOut | None = Field(None, description="null when no checker is configured")
    handoff: HandoffOut | None = Field(None, description="set when the turn was handed to a person")
    replaced: bool = Field(False, description="the answer failed the output safety check and was replaced")


class AnalyzeRequest(BaseModel):
    text: StorableText = Field(
        ...,
        min_length=1,
        description="The text to analyse, as a user message (not stored; at most max_message_chars characters)",
        # published at the setting's default, like the /v1 bodies; the route checks the configured value
        json_schema_extra={
            "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
            "maxLength": Settings.model_fields["max_message_chars"].default,
        },
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be blank")
        return v


class AnalyzeResponse(BaseModel):
    analysis: AnalysisOut
    language: str = Field(..., description="zh or en, as a chat turn would be answered in")
    embedded: bool = Field(..., description="whether the checkers had the text's embedding")
    ms: dict[str, float] = Field(..., description="what each part of the analysis cost")


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    sources: list[dict[str, Any]]
    latency_ms: float | None
    degraded: bool
    created_at: datetime


class DocumentOut(BaseModel):
    id: str
    source: str
    title: str
    status: str = Field(
        ...,
        description="searchable (BM25 now, vectors pending), ready, failed, or quarantined: stored but never used "
        "for answers (its encoding repair lost characters; `quarantine_reason` says how many) until released or "
        "replaced by a clean upload",
    )
    vector_status: str
    error: str | None
    warnings: list[str]
    quality: str = Field("clean", description="clean, repaired (nothing measurably lost) or damaged")
    quarantined: bool = False
    quarantine_reason: str | None = Field(None, description="why it is (or was, when released) quarantined")
    released_by: str | None = Field(None, description="the operator who released it from quarantine")
    released_at: datetime | None = None
    chunk_count: int
    size_bytes: int
    content_hash: str
    created_at: datetime
    updated_at: datetime
    original_digest: str | None = Field(
        None, description="SHA-256 of the kept original file `ragvigil reindex` rebuilds it from; null: none kept"
    )
    original_filename: str | None = None
    original_media_type: str | None = None
    original_size: int | None = None

    @model_validator(mode="after")
    def _quarantine_is_the_status(self) -> DocumentOut:
        # the stored status follows vector filling; what a reader needs first is that it is not served
        if self.quarantined:
            self.status = "quarantined"
        return self


class IngestOut(BaseModel):
    source: str
    outcome: Literal["created", "updated", "unchanged", "failed"]
    document_id: str | None
    chunks: int
    error: str | None
    warnings: list[str]
    quarantined: bool = False
    quarantine_reason: str | None = None


MAX_CONTENT_PARTS = 64  # a message's content parts; the text they hold is bounded by the settings

# The /v1 bodies are parsed leniently (so an unsupported value is a 400 naming it, not a bare 422) and
# checked by the route against the settings. Their published schema says exactly what the server accepts,
# so that a client or contract tester generating from it is not refused: the value limits below are the
# settings' defaults. A bound of the whole request (``max_request_chars``, and the characters of several
# text parts of one message together) cannot be said in JSON Schema and stays a 422.
_LIMITS = Settings.model_fields
MAX_MESSAGE_CHARS: int = _LIMITS["max_message_chars"].default
MAX_CONTEXT_MESSAGE_CHARS: int = _LIMITS["max_context_message_chars"].default
MAX_REQUEST_MESSAGES: int = _LIMITS["max_request_messages"].default
NO_NUL = r"^[^\x00]*$"  # the server refuses a NUL in text it stores or prompts with (StorableText)
# "blank": white space in Python's sense or in JSON Schema's (ECMA-262 \s), which differ (U+001F, U+FEFF):
# spelled out so that the server and a client validating the pattern agree on every character
BLANK = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
BLANK += "\u2028\u2029\u202f\u205f\u3000\ufeff"
_NOT_BLANK = "[^" + "".join(f"\\u{ord(c):04x}" for c in BLANK) + "]"


def without_blank(text: str) -> str:
    """``text`` without leading and trailing blank characters (empty if it is all blank)."""
    return text.strip(BLANK)


def not_blank(text: str) -> str:
    """``text`` unchanged, or a ``ValueError`` (a 422) when it holds nothing but blank characters."""
    if not without_blank(text):
        raise ValueError("must hold something other than blank characters")
    return text


_NULL = {"type": "null"}


def text_schema(limit: int, not_blank: bool = False) -> dict[str, Any]:
    """The published schema of stored text: no NUL and, if ``not_blank``, a character that is not blank.

    Written out rather than left to pydantic: a field with an ``AfterValidator`` loses its ``pattern``
    in the generated schema, and a client validating against it must refuse what the server refuses."""
    text: dict[str, Any] = {"type": "string", "maxLength": limit, "pattern": NO_NUL}
    return {"allOf": [text, {"pattern": _NOT_BLANK}]} if not_blank else text


def _content_schema(limit: int, user: bool) -> dict[str, Any]:
    """A message's content: a string, or text parts (only text: ragvigil reads no images or audio)."""
    part = {
        "type": "object",
        "properties": {"type": {"const": "text"}, "text": text_schema(limit)},
        "required": ["type", "text"],
    }
    parts: dict[str, Any] = {"type": "array", "maxItems": MAX_CONTENT_PARTS, "items": part}
    if user:  # a user message says something: at least one part has non-blank text
        parts["contains"] = {"properties": {"text": {"pattern": _NOT_BLANK}}}
    return {"anyOf": [text_schema(limit, not_blank=user), parts, *([] if user else [_NULL])]}


def _messages_schema() -> dict[str, Any]:
    """Every user message has text (the last one is the question); other roles may be empty."""
    user = {
        "type": "object",
        "properties": {"role": {"const": "user"}, "content": _content_schema(MAX_MESSAGE_CHARS, user=True)},
        "required": ["role", "content"],
    }
    others = ["system", "assistant", "tool", "developer"]
    other = {
        "type": "object",
        "properties": {
            "role": {"enum": others},
            "content": _content_schema(MAX_CONTEXT_MESSAGE_CHARS, user=False),
        },
        "required": ["role"],
    }
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_REQUEST_MESSAGES,
        "items": {"oneOf": [user, other]},
        "contains": {"properties": {"role": {"const": "user"}}, "required": ["role"]},
        "description": "the conversation; the last user message is the question",
    }


def _only(*values: Any, **schema: Any) -> WithJsonSchema:
    """Publish only the values the server supports; others are still parsed, to be refused by name."""
    return WithJsonSchema({"enum": list(values), **schema})


class OpenAIMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | Annotated[list[dict[str, Any]], Field(max_length=MAX_CONTENT_PARTS)] | None = None

    model_config = {"extra": "allow", "strict": True}  # name, tool_call_id...: accepted and not used

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class OpenAIStreamOptions(BaseModel):
    include_usage: bool = False

    model_config = {"strict": True}


class _OpenAIRequest(BaseModel):
    """What chat and text completions share. Parameters that change the answer's shape and that ragvigil
    cannot honour are typed here so the route can refuse them by name instead of ignoring them."""

    model: str = Field("ragvigil", max_length=256)
    stream: bool = False
    stream_options: OpenAIStreamOptions | None = None
    user: Annotated[StorableText | None, WithJsonSchema({"anyOf": [text_schema(128), _NULL]})] = Field(
        None, max_length=128
    )
    n: Annotated[int | None, _only(None, 1)] = Field(None, ge=1, le=128)
    temperature: float | None = None
    max_tokens: int | None = None

    # strict: the published types are JSON's, so "true" is not a boolean nor "1" a number
    model_config = {"extra": "allow", "strict": True}  # sampling knobs (top_p, seed, stop...): accepted, not used

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class OpenAIChatRequest(_OpenAIRequest):
    messages: Annotated[list[OpenAIMessage], WithJsonSchema(_messages_schema())] = Field(..., min_length=1)
    tools: Annotated[list[Any] | None, WithJsonSchema({"anyOf": [{"type": "array", "maxItems": 0}, _NULL]})] = None
    functions: Annotated[list[Any] | None, WithJsonSchema({"anyOf": [{"type": "array", "maxItems": 0}, _NULL]})] = None
    tool_choice: Annotated[Any, _only(None, "none", "auto")] = None
    function_call: Annotated[Any, _only(None, "none", "auto")] = None
    response_format: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"anyOf": [{"type": "object", "properties": {"type": {"const": "text"}}}, _NULL]}),
    ] = None
    logprobs: Annotated[bool | None, _only(None, False)] = None
    top_logprobs: Annotated[int | None, _only(None, 0)] = None


class OpenAICompletionRequest(_OpenAIRequest):
    prompt: Annotated[
        str | Annotated[list[str] | list[int] | list[list[int]], Field(max_length=MAX_CONTENT_PARTS)],
        WithJsonSchema(
            {
                "anyOf": [
                    text_schema(MAX_MESSAGE_CHARS, not_blank=True),
                    {
                        "type": "array",
                        "items": text_schema(MAX_MESSAGE_CHARS, not_blank=True),
                        "minItems": 1,
                        "maxItems": 1,
                    },
                ],
                "description": "the question, as text (one prompt per request)",
            }
        ),
    ]
    suffix: Annotated[str | None, WithJsonSchema({"anyOf": [{"type": "string", "maxLength": 0}, _NULL]})] = None
    echo: Annotated[bool, _only(False)] = False
    best_of: Annotated[int | None, _only(None, 1)] = Field(None, ge=1, le=128)
    logprobs: Annotated[int | None, _only(None, 0)] = None
