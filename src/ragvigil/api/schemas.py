"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ragvigil.storage.text import StorableText

KB_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class ChatRequest(BaseModel):
    # StorableText: a NUL or a lone surrogate is a 422 here, not a failed database write later
    message: StorableText = Field(..., min_length=1, description="The user's question")
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


class OpenAIMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class OpenAIChatRequest(BaseModel):
    model: str = "ragvigil"
    messages: list[OpenAIMessage] = Field(..., min_length=1)
    stream: bool = False
    user: str | None = Field(None, max_length=128)
    temperature: float | None = None
    max_tokens: int | None = None

    model_config = {"extra": "allow"}
