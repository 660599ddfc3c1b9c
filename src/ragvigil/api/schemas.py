"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

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


class ChatResponse(BaseModel):
    session_id: str
    message_id: str
    answer: str
    sources: list[Source]
    degraded: bool
    degraded_reasons: list[str] = []
    latency_ms: float


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
    status: str
    vector_status: str
    error: str | None
    warnings: list[str]
    chunk_count: int
    size_bytes: int
    content_hash: str
    created_at: datetime
    updated_at: datetime


class IngestOut(BaseModel):
    source: str
    outcome: Literal["created", "updated", "unchanged", "failed"]
    document_id: str | None
    chunks: int
    error: str | None
    warnings: list[str]


MAX_CONTENT_PARTS = 64  # a message's content parts; the text they hold is bounded by the settings


class OpenAIMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | Annotated[list[dict[str, Any]], Field(max_length=MAX_CONTENT_PARTS)] | None = None

    model_config = {"extra": "allow"}  # name, tool_call_id...: accepted and not used

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class OpenAIStreamOptions(BaseModel):
    include_usage: bool = False


class _OpenAIRequest(BaseModel):
    """What chat and text completions share. Parameters that change the answer's shape and that ragvigil
    cannot honour are typed here so the route can refuse them by name instead of ignoring them."""

    model: str = Field("ragvigil", max_length=256)
    stream: bool = False
    stream_options: OpenAIStreamOptions | None = None
    user: str | None = Field(None, max_length=128)
    n: int | None = Field(None, ge=1, le=128)
    logprobs: Any = None
    temperature: float | None = None
    max_tokens: int | None = None

    model_config = {"extra": "allow"}  # sampling knobs (top_p, seed, stop...) are accepted and not used

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class OpenAIChatRequest(_OpenAIRequest):
    messages: list[OpenAIMessage] = Field(..., min_length=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    top_logprobs: int | None = None


class OpenAICompletionRequest(_OpenAIRequest):
    prompt: str | Annotated[list[str] | list[int] | list[list[int]], Field(max_length=MAX_CONTENT_PARTS)]
    suffix: str | None = None
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=128)
