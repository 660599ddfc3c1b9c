"""Every metric ragvigil exports, declared once. Label sets are bounded by construction:
routes are templates (never raw paths), stages and outcomes come from fixed lists."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from ragvigil.ops import instrumentation


class _DeferredObservations(Collector):
    """Registered first, so every collection applies the queued observations before reading any metric."""

    def collect(self) -> list:  # type: ignore[override]
        instrumentation.drain()
        return []


REGISTRY = CollectorRegistry(auto_describe=True)
REGISTRY.register(_DeferredObservations())
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: the hot path skips prometheus_client's checks and lock.

    Only for label values from fixed sets (stages, outcomes, route templates, status codes), so the
    memo stays as small as the metric's own series.
    """
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "ragvigil_http_requests_total",
    "HTTP requests by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "ragvigil_http_request_duration_seconds",
    "HTTP request duration by route template and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "ragvigil_stage_duration_seconds",
    "Duration of one chat pipeline stage.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_OUTCOMES = Counter(
    "ragvigil_stage_outcomes_total",
    "Chat pipeline stage runs by outcome (ok, error, degraded).",
    ["stage", "outcome"],
    registry=REGISTRY,
)
CHAT_ANSWERS = Counter(
    "ragvigil_chat_answers_total",
    "Chat answers by kind (answered, no_answer, or what settled the turn: safety, safe_mode, small_talk) and "
    "whether the turn was degraded (a fallback answered or a dependency failed).",
    ["kind", "degraded"],
    registry=REGISTRY,
)
DOCUMENTS_INGESTED = Counter(
    "ragvigil_documents_ingested_total",
    "Documents processed by ingestion, by outcome (created, updated, unchanged, failed).",
    ["outcome"],
    registry=REGISTRY,
)
DOCUMENTS_QUARANTINED = Gauge(
    "ragvigil_documents_quarantined",
    "Documents kept out of answers because their encoding repair lost characters, per knowledge base "
    "(until a clean copy is uploaded or an operator releases them); set on change and at start.",
    ["kb"],
    registry=REGISTRY,
)
VECTORS_PENDING = Gauge(
    "ragvigil_vectors_pending_chunks",
    "Chunks stored and searchable by BM25 whose vectors are not yet filled in.",
    registry=REGISTRY,
)
JOURNAL_PENDING = Gauge(
    "ragvigil_journal_pending_turns",
    "Chat turns accepted while the database was unavailable, not yet written to it.",
    registry=REGISTRY,
)
JOURNAL_REJECTED = Counter(
    "ragvigil_journal_rejected_total",
    "Journaled chat turns set aside because the database refused them, by reason (unreadable, data_error, write_error).",
    ["reason"],
    registry=REGISTRY,
)
JOURNAL_REJECT_REASONS = ("unreadable", "data_error", "write_error")
for _reason in JOURNAL_REJECT_REASONS:  # at 0 from the start, so a first rejection is an increase
    JOURNAL_REJECTED.labels(_reason)
JOURNAL_REJECTED_TURNS = Gauge(
    "ragvigil_journal_rejected_turns",
    "Journaled chat turns set aside in journal/rejected, waiting for a person (kept on disk, never replayed).",
    registry=REGISTRY,
)
JOURNAL_BYTES = Gauge(
    "ragvigil_journal_pending_bytes",
    "Bytes of journaled chat turns waiting for replay (bounded by journal.max_bytes).",
    registry=REGISTRY,
)
JOURNAL_FILL = Gauge(
    "ragvigil_journal_fill_ratio",
    "How full the journal is: the larger of pending turns / journal.max_entries and bytes / journal.max_bytes.",
    registry=REGISTRY,
)
JOURNAL_FULL = Counter(
    "ragvigil_journal_full_total",
    "Chat turns refused with 503 journal_full: the database was down and the journal at its bound.",
    registry=REGISTRY,
)
RETRIEVAL_MODE = Gauge(
    "ragvigil_retrieval_mode",
    "1 for the retrieval mode in force (hybrid, lexical_only), 0 for the other.",
    ["mode"],
    registry=REGISTRY,
)
RETRIEVAL_MODE_CHANGES = Counter(
    "ragvigil_retrieval_mode_changes_total",
    "Switches of the retrieval mode, by the mode switched to (hybrid, lexical_only).",
    ["mode"],
    registry=REGISTRY,
)
for _mode in ("hybrid", "lexical_only"):
    RETRIEVAL_MODE_CHANGES.labels(_mode)
HTTP_IN_FLIGHT = Gauge(
    "ragvigil_http_requests_in_flight",
    "HTTP requests being served right now.",
    registry=REGISTRY,
)


class _InFlight:
    """Requests being served. Only the event loop's thread changes it (one loop per process), so a
    plain attribute does, without a lock per request; the gauge reads it when collected."""

    value = 0


IN_FLIGHT = _InFlight()
HTTP_IN_FLIGHT.set_function(lambda: IN_FLIGHT.value)
LLM_REQUESTS = Counter(
    "ragvigil_llm_requests_total",
    "Generator calls by provider, model and outcome (ok, timeout, unavailable, rate_limited, malformed, "
    "rejected, key_rejected, context_too_long, error).",
    ["provider", "model", "outcome"],
    registry=REGISTRY,
)
LLM_DURATION = Histogram(
    "ragvigil_llm_request_duration_seconds",
    "Generator call duration (whole answer) by provider.",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
LLM_FIRST_TOKEN = Histogram(
    "ragvigil_llm_time_to_first_token_seconds",
    "Time from a streaming generator call to its first text, by provider.",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "ragvigil_llm_tokens_total",
    "Tokens reported by the provider, by kind (prompt, completion).",
    ["provider", "kind"],
    registry=REGISTRY,
)
RETRIEVAL_HITS = Histogram(
    "ragvigil_retrieval_relevant_hits",
    "Relevant passages found per question.",
    buckets=(0, 1, 2, 3, 5, 10, 20),
    registry=REGISTRY,
)
RETRIEVAL_EMPTY = Counter(
    "ragvigil_retrieval_empty_total",
    "Questions for which no relevant passage was found (the honest no-answer).",
    registry=REGISTRY,
)
VECTOR_STORE_OPS = Counter(
    "ragvigil_vector_store_operations_total",
    "Vector store operations by operation (search, upsert, delete, flush) and outcome (ok, error).",
    ["op", "outcome"],
    registry=REGISTRY,
)
SENTENCE_VECTOR_READS = Counter(
    "ragvigil_sentence_vector_reads_total",
    "Reads of a turn's background sentence vectors by outcome (ok; error: the answer was built without them).",
    ["outcome"],
    registry=REGISTRY,
)
DATABASE_ERRORS = Counter(
    "ragvigil_database_errors_total",
    "Database operations that failed, by where they failed (chat_persist, api, background).",
    ["where"],
    registry=REGISTRY,
)
CACHE_REQUESTS = Counter(
    "ragvigil_cache_requests_total",
    "Cache lookups by cache and result (hit, miss).",
    ["cache", "result"],
    registry=REGISTRY,
)
FEEDBACK_SCORE = Histogram(
    "ragvigil_feedback_score",
    "User ratings of answers (-1 bad, 0 neutral, 1 good); recorded once the feedback API exists.",
    buckets=(-1.0, 0.0, 1.0),
    registry=REGISTRY,
)
ALERT_EVALUATIONS = Counter(
    "ragvigil_alert_evaluations",
    "Evaluation cycles of the built-in alert engine (the rules of the groups due, once per cycle).",
    registry=REGISTRY,
)
ALERT_LAST_EVALUATION = Gauge(
    "ragvigil_alert_last_evaluation_timestamp_seconds",
    "Unix time the alert engine's latest evaluation cycle started (a stall shows as an old value).",
    registry=REGISTRY,
)
ALERT_EVALUATION_DURATION = Histogram(
    "ragvigil_alert_evaluation_duration_seconds",
    "Time one evaluation cycle took (sampling the signals and evaluating the rules of the groups due).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
ALERT_RULE_FAILURES = Counter(
    "ragvigil_alert_rule_failures",
    "Rule evaluations that failed (the expression could not be evaluated), by rule.",
    ["rule"],
    registry=REGISTRY,
)
ALERTS_ACTIVE = Gauge(
    "ragvigil_alerts",
    "Alerts of the built-in engine by state (pending, firing) and severity (P1, P2, P3).",
    ["state", "severity"],
    registry=REGISTRY,
)
ALERT_SIGNAL_SERIES = Gauge(
    "ragvigil_alert_signal_series",
    "Series kept in the alert engine's signal history.",
    registry=REGISTRY,
)
ALERT_HEARTBEAT_FAILURES = Counter(
    "ragvigil_alert_heartbeat_failures",
    "Dead man's switch heartbeats that could not be delivered to the configured URL.",
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "ragvigil_notifications",
    "Alert notifications by channel (configured names) and outcome (sent, failed after retries).",
    ["channel", "outcome"],
    registry=REGISTRY,
)
NOTIFICATION_CHANNEL_UP = Gauge(
    "ragvigil_notification_channel_up",
    "1 while a notification channel delivers, 0 after three failed deliveries in a row.",
    ["channel"],
    registry=REGISTRY,
)
PROVIDER_BREAKER_STATE = Gauge(
    "ragvigil_provider_breaker_state",
    "Circuit breaker state per configured provider: 0 closed, 1 open, 2 half-open.",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_BREAKER_TRANSITIONS = Counter(
    "ragvigil_provider_breaker_transitions",
    "Circuit breaker transitions per provider, from and to (closed, open, half_open).",
    ["provider", "from", "to"],
    registry=REGISTRY,
)
PROVIDER_RETRIES = Counter(
    "ragvigil_provider_retries",
    "Further attempts at the same provider, by the error kind that caused them.",
    ["provider", "kind"],
    registry=REGISTRY,
)
PROVIDER_FAILOVERS = Counter(
    "ragvigil_provider_failovers",
    "Turns passed on to the next provider, by the provider left and why (an error kind, breaker_open, "
    "key_rejected, busy, no_time).",
    ["provider", "reason"],
    registry=REGISTRY,
)
PROVIDER_KEY_REJECTED = Gauge(
    "ragvigil_provider_key_rejected",
    "1 while a provider's API key is marked bad (it answered 401/403); an operator resets it.",
    ["provider"],
    registry=REGISTRY,
)
ADMISSION_LIMIT = Gauge(
    "ragvigil_admission_concurrency_limit",
    "The adaptive limit on answer requests in flight (a gradient of short- vs long-term latency).",
    registry=REGISTRY,
)
ADMISSION_IN_FLIGHT = Gauge(
    "ragvigil_admission_in_flight",
    "Answer and upload requests holding an admission slot right now.",
    registry=REGISTRY,
)
ADMISSION_QUEUED = Gauge(
    "ragvigil_admission_queued",
    "Requests waiting in the admission queue for a slot.",
    registry=REGISTRY,
)
ADMISSION_ADMITTED = Counter(
    "ragvigil_admission_admitted_total",
    "Requests given an admission slot, by priority (crisis, vip, normal, background).",
    ["priority"],
    registry=REGISTRY,
)
ADMISSION_SHED = Counter(
    "ragvigil_admission_shed_total",
    "Requests refused with 503 overloaded, by priority and reason (queue_full, displaced, predicted_wait, timeout).",
    ["priority", "reason"],
    registry=REGISTRY,
)
ADMISSION_RATE_LIMITED = Counter(
    "ragvigil_admission_rate_limited_total",
    "Requests refused with 429 rate_limited, by the limit that refused them (key, user).",
    ["scope"],
    registry=REGISTRY,
)
FEATURE_ENABLED = Gauge(
    "ragvigil_feature_enabled",
    "1 while a non-core feature is on, 0 while it is shed (under load, or by an operator).",
    ["feature"],
    registry=REGISTRY,
)
FEATURE_SWITCHES = Counter(
    "ragvigil_feature_switches_total",
    "Feature flag switches by feature and direction (on, off).",
    ["feature", "to"],
    registry=REGISTRY,
)
SAFE_MODE_ACTIVE = Gauge(
    "ragvigil_safe_mode_active",
    "1 while safe mode answers every message with the configured safe response, 0 otherwise.",
    registry=REGISTRY,
)
SAFETY_FLAGS = Counter(
    "ragvigil_safety_flags_total",
    "Texts the safety check flagged, by category (self_harm, violence, harassment, sexual_minors, illegal, error: "
    "the check itself failed), severity and direction (input: a user message, output: an answer replaced).",
    ["category", "severity", "direction"],
    registry=REGISTRY,
)
EMOTION_TURNS = Counter(
    "ragvigil_emotion_turns_total",
    "User turns by the emotion found in them (joy, sadness, anger, fear, disgust, surprise, neutral) and its "
    "polarity on the 5-step scale.",
    ["label", "polarity"],
    registry=REGISTRY,
)
INTENT_TURNS = Counter(
    "ragvigil_intent_turns_total",
    "User turns by intent (names from the intents file, at most 64 of them; any further one, and out of scope, "
    "is other).",
    ["intent"],
    registry=REGISTRY,
)
ANALYSIS_DURATION = Histogram(
    "ragvigil_analysis_duration_seconds",
    "What understanding one user turn cost beyond its shared query embedding, by part (safety, emotion, intent).",
    ["part"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
HANDOFFS = Counter(
    "ragvigil_handoffs_total",
    "Hand-offs to a person queued, by reason (crisis, complaint, negative_trend, human_request, "
    "repeated_no_answer) and priority (1 most urgent); counted when queued, in the database or the spool.",
    ["reason", "priority"],
    registry=REGISTRY,
)
HANDOFF_SPOOL_PENDING = Gauge(
    "ragvigil_handoff_spool_pending",
    "Hand-offs decided while the database was down, waiting in the spool to be written.",
    registry=REGISTRY,
)
HANDOFFS_OPEN = Gauge(
    "ragvigil_handoffs_open",
    "Hand-off records waiting for a person (open, not yet claimed), by priority; refreshed when this instance "
    "changes one and by the replayer every few seconds (a claim or close from another process shows then).",
    ["priority"],
    registry=REGISTRY,
)
FAULTS_ACTIVE = Gauge(
    "ragvigil_faults_active",
    "Injected faults active right now, by target (provider:<name>, vector_store, embedding, database, latency, cpu, "
    "redis, safety).",
    ["target"],
    registry=REGISTRY,
)
FAULT_HITS = Counter(
    "ragvigil_fault_hits_total",
    "Calls an injected fault acted on (failed, slowed or delayed), by target: evidence a drill's fault took effect.",
    ["target"],
    registry=REGISTRY,
)


class _OnceSet(Collector):
    """Exports ``metric`` only once it has a value: before that the series is absent (a rule reads no data).

    Why: the canary's gauge must not read as passing before a run has passed, nor as failing (a P1 and
    safe mode) before the first run could finish; absent says "not known yet", and the first run is at start.
    """

    def __init__(self, metric: Gauge) -> None:
        self.metric = metric
        self.known = False

    def collect(self) -> list:  # type: ignore[override]
        return list(self.metric.collect()) if self.known else []

    def set(self, value: float | None) -> None:
        """``value``, or None to make the series absent again (the canary stopped)."""
        if value is None:
            self.known = False
            self.metric.set(0)
        else:
            self.metric.set(value)
            self.known = True


SAFETY_CANARY_PASSING = Gauge(
    "ragvigil_safety_canary_passing",
    "1 after a safety canary run in which every crisis probe got the crisis decision and no benign probe was "
    "flagged, 0 after a failing run (missed, flagged, the check raised or hung); absent until the first run ends.",
    registry=None,  # exported through SAFETY_CANARY (absent until set)
)
SAFETY_CANARY = _OnceSet(SAFETY_CANARY_PASSING)
REGISTRY.register(SAFETY_CANARY)
SAFETY_CANARY_RUNS = Counter(
    "ragvigil_safety_canary_runs_total",
    "Safety canary runs by outcome: pass, missed (a crisis probe not answered as a crisis), flagged (a benign "
    "probe flagged), error (the check raised), timeout (still running after canary.timeout_s, or hung since).",
    ["outcome"],
    registry=REGISTRY,
)


DIAGNOSIS_DROPPED = Counter(
    "ragvigil_diagnosis_dropped_total",
    "Incidents whose at-open diagnosis was dropped because the diagnosis queue was full (the oldest waiting "
    "one goes); such an incident can still be diagnosed on demand.",
    registry=REGISTRY,
)
REMEDIATION_ACTIONS = Counter(
    "ragvigil_remediation_actions",
    "Remediation actions by action name and result: verified, failed, rolled_back, skipped (cooldown, hourly "
    "limit, unavailable), applied (run by hand, not verified).",
    ["action", "result"],
    registry=REGISTRY,
)
REDIS_UP = Gauge(
    "ragvigil_redis_up",
    "1 while the shared Redis answers, 0 while it fails and rate limits, breaker states and the query cache "
    "are decided in process; by target (host:port). Absent without Redis configured.",
    ["target"],
    registry=REGISTRY,
)
REDIS_FALLBACKS = Counter(
    "ragvigil_redis_fallbacks_total",
    "Redis calls that failed or were not tried (Redis down, backing off) and were answered by in-process state "
    "instead, by use (rate_limit, breaker, cache, health; leader: the leader lease, which then stands by).",
    ["use"],
    registry=REGISTRY,
)
REINDEX_DOCUMENTS = Counter(
    "ragvigil_reindex_documents_total",
    "Documents a reindex handled, by outcome: rebuilt (its new chunks and vectors staged), skipped (no original "
    "kept, or changed meanwhile), failed (its original no longer loads; its served chunks kept).",
    ["outcome"],
    registry=REGISTRY,
)
REINDEX_RUNNING = Gauge(
    "ragvigil_reindex_jobs_running",
    "Reindex jobs running in this process (the old generation serves until each switches in its new one).",
    registry=REGISTRY,
)
VECTOR_INDEX_KIND = Gauge(
    "ragvigil_vector_index_kind",
    "1 for the kind (flat, hnsw) each knowledge base's vector index is now, 0 for the other; with "
    "retrieval.vector_index=auto it changes with the base's size.",
    ["kb", "kind"],
    registry=REGISTRY,
)
VECTOR_INDEX_REBUILDS = Counter(
    "ragvigil_vector_index_rebuilds_total",
    "Background rebuilds of a knowledge base's vector index (flat to HNSW at the auto threshold, HNSW "
    "compaction, HNSW back to flat), by outcome (ok, error, abandoned: the base was dropped during the build).",
    ["outcome"],
    registry=REGISTRY,
)
BACKUP_LAST_VERIFIED = Gauge(
    "ragvigil_backup_last_verified_timestamp_seconds",
    "Unix time at which the newest backup in backup.dir last passed `backup verify` (restored to scratch, "
    "counts and a retrieval smoke test checked); 0 when none ever did.",
    registry=REGISTRY,
)
BACKUP_MAX_AGE = Gauge(
    "ragvigil_backup_max_age_seconds",
    "How old the last verified backup may be under backup.schedule (one period plus backup.grace_h); absent "
    "while backups are not scheduled (BackupMissing compares the two).",
    registry=REGISTRY,
)
BACKUP_RUNS = Counter(
    "ragvigil_backup_runs_total",
    "Backups the running service made (asked over the API or scheduled), by outcome: verified, created (not "
    "verified), verify_failed, failed.",
    ["outcome"],
    registry=REGISTRY,
)
ANSWER_CACHE_REQUESTS = Counter(
    "ragvigil_answer_cache_requests_total",
    "Turns that reached retrieval, by what the answer cache did: hit (answered from an answer kept for this "
    "knowledge-base version), miss (answered afresh), bypass (the turn belongs to a conversation, so its "
    "answer may depend on it).",
    ["outcome"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "ragvigil_leader",
    "1 while this replica leads (runs the work done once per cluster: scheduled backups and their retention, "
    "the vector filler on a shared vector server), 0 while it stands by (leader.backend).",
    registry=REGISTRY,
)
LEADER_CHANGES = Counter(
    "ragvigil_leader_changes_total",
    "Times this replica gained or lost the leadership, by change: gained, lost.",
    ["change"],
    registry=REGISTRY,
)
