"""One validated settings tree for the whole service.

Sources, highest precedence first: keyword arguments, ``RAGVIGIL_*`` environment
variables (nested fields with ``__``, e.g. ``RAGVIGIL_OPENAI__BASE_URL``), a ``.env``
file, a TOML file (``RAGVIGIL_CONFIG_FILE`` or ``./ragvigil.toml``), then the
defaults of the selected profile. Nothing else in the package reads ``os.environ``
for configuration.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Profile(StrEnum):
    development = "development"
    staging = "staging"
    production = "production"


# Defaults that differ by profile. A value set anywhere else wins over these.
PROFILE_DEFAULTS: dict[Profile, dict[str, Any]] = {
    Profile.development: {
        "log_level": "DEBUG",
        "expose_errors": True,
        "api_docs": True,
        "auth_required": False,
        "first_start_admin_key": True,
    },
    Profile.staging: {
        "log_level": "INFO",
        "expose_errors": True,
        "api_docs": True,
        "auth_required": True,
        "first_start_admin_key": True,
    },
    Profile.production: {
        "log_level": "INFO",
        "expose_errors": False,
        "api_docs": False,
        "auth_required": True,
        "first_start_admin_key": False,
    },
}


class OpenAISettings(BaseModel):
    """An OpenAI-compatible chat completions endpoint (OpenAI, DashScope, vLLM, llama.cpp...)."""

    base_url: str = "http://127.0.0.1:8080/v1"
    api_key: SecretStr = SecretStr("")
    model: str = "default"
    timeout_s: float = Field(30.0, gt=0, le=600)
    max_tokens: int = Field(512, gt=0, le=32768)
    temperature: float = Field(0.2, ge=0, le=2)


class RetrievalSettings(BaseModel):
    """Knobs of hybrid retrieval and chunking."""

    top_k: int = Field(5, ge=1, le=50)
    candidates: int = Field(30, ge=1, le=500)
    rrf_k: int = Field(60, ge=1)
    bm25_weight: float = Field(1.0, ge=0)
    vector_weight: float = Field(1.0, ge=0)
    chunk_chars: int = Field(500, ge=100, le=8000)
    chunk_overlap: int = Field(80, ge=0, le=2000)
    history_turns: int = Field(3, ge=0, le=20)
    min_term_coverage: float = Field(0.5, ge=0, le=1)
    min_vector_score: float = Field(0.865, ge=0, le=1)
    vector_index: Literal["flat", "hnsw"] = "flat"
    embed_threads: int = Field(1, ge=1, le=64)
    query_engines: int = Field(2, ge=1, le=16, description="parallel query-embedding engines")
    embed_batch: int = Field(16, ge=1, le=256)
    query_cache_size: int = Field(4096, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RetrievalSettings:
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError("chunk_overlap must be smaller than chunk_chars")
        return self


_MATCHER_TEXT = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"?.*?"?\s*$')
ChannelType = Literal["webhook", "slack", "email", "dingtalk", "feishu", "wecom"]


class ChannelSettings(BaseModel):
    """One channel, e.g. in ragvigil.toml: ``[[alerts.channels]] name="ops" type="webhook" url="…"``."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    type: ChannelType
    url: str | None = None  # webhook / robot URL
    secret: SecretStr | None = None  # DingTalk / Feishu signing secret
    severities: list[Literal["P1", "P2", "P3"]] = ["P1", "P2", "P3"]
    language: Literal["zh", "en"] = "en"
    timeout_s: float = Field(5.0, gt=0, le=60)
    attempts: int = Field(3, ge=1, le=10)
    # email
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_to: list[str] = []
    tls_verify: bool = True  # off only for a test server with a self-signed certificate


class InhibitRule(BaseModel):
    source_matchers: list[str]
    target_matchers: list[str]
    equal: list[str] = []

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matcher_syntax(cls, v: list[str]) -> list[str]:
        for m in v:
            if not _MATCHER_TEXT.fullmatch(m):
                raise ValueError(f'matcher {m!r} is not of the form name="value" (operators =, !=, =~, !~)')
        return v


class RoutingSettings(BaseModel):
    group_by: list[str] = ["alertname"]
    group_wait: float = Field(10.0, ge=0)
    p1_group_wait: float = Field(0.0, ge=0)
    group_interval: float = Field(60.0, gt=0)
    repeat_interval: float = Field(300.0, gt=0)
    inhibit_rules: list[InhibitRule] = [
        InhibitRule(
            source_matchers=['alertname="RagvigilUnhealthy"'], target_matchers=['severity=~"P2|P3"'], equal=["instance"]
        )
    ]
    escalate_p2_after: float | None = Field(1800.0, description="seconds unacknowledged before P2 becomes P1")
    escalate_p3_after: float | None = Field(7200.0, description="seconds unacknowledged before P3 becomes P2")

    def escalation(self) -> dict[str, tuple[str, float]]:
        out = {}
        if self.escalate_p2_after is not None:
            out["P2"] = ("P1", self.escalate_p2_after)
        if self.escalate_p3_after is not None:
            out["P3"] = ("P2", self.escalate_p3_after)
        return out


class AlertSettings(BaseModel):
    """The built-in alert engine (embedded mode); in scaled mode Prometheus evaluates the same rules."""

    enabled: bool = True
    rules_file: Path | None = Field(None, description="a Prometheus rule file; empty: the default rule pack")
    eval_interval: float = Field(3.0, gt=0, le=300, description="seconds between evaluation cycles")
    history_s: float = Field(900.0, ge=60, description="seconds of signal history kept for the rules")
    stall_after: float = Field(30.0, gt=0, description="no evaluation for this long is a stall")
    heartbeat_url: str | None = Field(None, description="dead man's switch: POSTed while evaluation is healthy")
    heartbeat_interval: float = Field(60.0, gt=0)
    record_interval: float = Field(15.0, ge=0, description="seconds between signal snapshots on disk (0: off)")
    record_retention_h: float = Field(48.0, gt=0, description="hours of signal recording kept for backtests")
    routing: RoutingSettings = RoutingSettings()
    channels: list[ChannelSettings] = []
    external_url: str = Field("", description="where people reach this ragvigil (links in notifications)")

    @field_validator("channels")
    @classmethod
    def _unique_channel_names(cls, v: list[ChannelSettings]) -> list[ChannelSettings]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique: {', '.join(dupes)}")
        return v


class Settings(BaseSettings):
    """Settings of one ragvigil instance. Every file it writes lives under ``data_dir``."""

    model_config = SettingsConfigDict(
        env_prefix="RAGVIGIL_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_default=True,
    )

    profile: Profile = Profile.development
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default is a SQLite file in data_dir")
    default_kb: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    generator: Literal["extractive", "openai"] = "extractive"
    openai: OpenAISettings = OpenAISettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_retention_days: dict[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], int | None] = Field(
        default_factory=lambda: {"DEBUG": 7, "INFO": 30, "WARNING": 60, "ERROR": 90, "CRITICAL": None},
        description="days a rotated log line is kept, by level; null keeps it forever",
    )
    log_json: bool = True
    log_flush_interval: float = Field(
        0.2,
        ge=0,
        le=5,
        description="seconds INFO/WARNING lines may wait to be written in a batch (ERROR+ at once); 0 = each at once",
    )
    expose_errors: bool = False
    api_docs: bool = False
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_message_chars: int = Field(4000, ge=1)
    background_embedding: bool = True
    log_message_contents: bool = Field(False, description="keep conversation text, encrypted, in logs/messages.enc")
    message_log_key: SecretStr | None = Field(
        None, description="Fernet key for logs/messages.enc (ragvigil logs new-key)"
    )
    instrumentation: bool = Field(
        True, description="metrics, traces and request/stage log lines (off only to measure their cost)"
    )
    otlp_endpoint: str | None = Field(
        None, description="also export traces over OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces"
    )
    auth_required: bool = Field(
        False,
        description="a key on every route but the open probes; off: chat, sessions and knowledge-base routes "
        "answer loopback callers without one (ops routes and deletions need a key in every profile)",
    )
    first_start_admin_key: bool = Field(
        False, description="the first start creates an admin key, prints it once and stores it in <data dir>/admin.key"
    )
    open_probes: bool = Field(True, description="/health/* and /metrics without a key (Prometheus, kubelet)")
    min_free_disk_mb: int = Field(200, ge=0, description="below this the disk check fails")
    alerts: AlertSettings = AlertSettings()

    @model_validator(mode="before")
    @classmethod
    def _apply_profile_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        try:
            profile = Profile(data.get("profile", Profile.development))
        except ValueError:
            return data  # the field validator reports the bad profile
        return {**PROFILE_DEFAULTS[profile], **data}

    @model_validator(mode="after")
    def _message_log_needs_a_key(self) -> Settings:
        if self.log_message_contents:
            key = self.message_log_key.get_secret_value() if self.message_log_key else ""
            try:
                from cryptography.fernet import Fernet

                Fernet(key.encode())
            except ValueError as exc:
                raise ValueError(
                    "message_log_key must be a Fernet key (create one with `ragvigil logs new-key`) "
                    "when log_message_contents is on"
                ) from exc
        return self

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ragvigil.db'}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def signal_dir(self) -> Path:
        return self.data_dir / "signals"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RAGVIGIL_CONFIG_FILE", "ragvigil.toml"))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_file)
        return init_settings, env_settings, dotenv_settings, toml


def load_settings(**overrides: Any) -> Settings:
    """Build settings; raises pydantic's ValidationError listing every bad field."""
    return Settings(**overrides)


def describe_errors(exc: ValidationError) -> list[str]:
    """Render every validation error as ``path: reason`` for humans."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(settings)"
        lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return lines


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with secrets masked, for ``config show``."""
    data = settings.model_dump(mode="json")
    if settings.openai.api_key.get_secret_value():
        data["openai"]["api_key"] = "********"
    if settings.message_log_key is not None:
        data["message_log_key"] = "********"
    url = settings.database_url
    if url and "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        data["database_url"] = f"{scheme}//{creds.split(':', 1)[0]}:********@{host}"
    data["effective_database_url"] = data["database_url"] if settings.database_url else settings.db_url
    return data
