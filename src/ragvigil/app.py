"""Builds and wires the parts of one ragvigil instance (used by the HTTP app and the CLI)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from ragvigil.chat.journal import Journal
from ragvigil.chat.pipeline import ChatPipeline, Generate, LoadHistory, Persist, RecordContents, Retrieve
from ragvigil.chat.sessions import SessionStore
from ragvigil.config import Settings, reveal
from ragvigil.knowledge.catalog import Catalog
from ragvigil.knowledge.embeddings import CachedQueryEmbedder, E5Embedder
from ragvigil.knowledge.ingest import Ingestor
from ragvigil.knowledge.retrieval import HybridRetriever
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.knowledge.vector_filler import VectorFiller
from ragvigil.knowledge.vectorstore import FaissVectorStore
from ragvigil.ops import instrumentation, metrics, semconv, tracing
from ragvigil.ops.access import AuditLog, KeyStore, is_loopback
from ragvigil.ops.admin_key import ensure_admin_key
from ragvigil.ops.alerts.channels import Notification, build_channel
from ragvigil.ops.alerts.incidents import AlertNotice, IncidentStore
from ragvigil.ops.alerts.notifier import Notifier
from ragvigil.ops.alerts.recording import SignalRecorder
from ragvigil.ops.alerts.router import Router
from ragvigil.ops.alerts.service import AlertService
from ragvigil.ops.alerts.silences import SilenceStore
from ragvigil.ops.health import HEALTH_COLLECTOR, HealthChecks
from ragvigil.ops.logfiles import RetentionPolicy, RetentionReport, enforce_retention
from ragvigil.ops.message_log import EncryptedMessageLog
from ragvigil.ops.remediation import build_remediation
from ragvigil.ops.system import register_system_collectors
from ragvigil.providers.base import Generator
from ragvigil.providers.extractive import ExtractiveGenerator
from ragvigil.providers.metered import MeteredGenerator
from ragvigil.providers.openai_compat import OpenAIGenerator
from ragvigil.storage.db import Database, migrate, ping

log = logging.getLogger(__name__)

DEFAULT_SECRETS = frozenset({"changeme", "change-me", "secret", "password", "default", "test", "sk-xxx"})


def open_routes_exposed(settings: Settings, host: str | None = None) -> str | None:
    """Why routes open without a key must not be bound to ``host`` (default ``settings.host``), if so."""
    host = host if host is not None else settings.host
    if settings.auth_required or is_loopback(host):
        return None
    return (
        f"auth_required is off, so chat and knowledge-base routes answer without a key, but the bind address "
        f"{host!r} is not loopback: bind 127.0.0.1, or set RAGVIGIL_AUTH_REQUIRED=true to need a key everywhere"
    )


class Runtime:
    """Every long-lived object of one instance, built once from settings."""

    def __init__(self, settings: Settings, *, apply_migrations: bool = True) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        instrumentation.configure(settings.instrumentation)
        register_system_collectors(metrics.REGISTRY, settings.data_dir)
        if settings.otlp_endpoint:
            tracing.enable_otlp(settings.otlp_endpoint.get_secret_value())
        semconv.capture_contents(settings.log_message_contents)  # conversation text on spans only when kept
        self.db = Database(settings.db_url)
        if apply_migrations:
            migrate(self.db.engine)
        rs = settings.retrieval
        self.tokenizer = Tokenizer(settings.cache_dir)
        self.embedder = CachedQueryEmbedder(
            E5Embedder(threads=rs.embed_threads, engines=rs.query_engines, max_query_tokens=rs.max_query_tokens),
            rs.query_cache_size,
        )
        self.vectors = FaissVectorStore(settings.index_dir, self.embedder.dim, rs.vector_index)
        self.catalog = Catalog(self.db)
        self.ingestor = Ingestor(self.catalog, self.tokenizer, rs, self.vectors, settings.ingest)
        self.retriever = HybridRetriever(self.catalog, self.tokenizer, self.embedder, self.vectors, rs)
        # its own engine: a batch of passages must never make questions wait behind it
        self.filler = VectorFiller(self.db, E5Embedder(threads=rs.embed_threads), self.vectors, batch=rs.embed_batch)
        self.sessions = SessionStore(self.db)
        self.keys = KeyStore(self.db)
        self.audit = AuditLog(self.db)
        self.journal = Journal(settings.data_dir / "journal")
        metrics.JOURNAL_REJECTED_TURNS.set(len(self.journal.rejected()))
        self.extractive = MeteredGenerator(ExtractiveGenerator(self.tokenizer))
        self.generator: Generator = (
            MeteredGenerator(OpenAIGenerator(settings.openai), settings.openai.model)
            if settings.generator == "openai"
            else self.extractive
        )
        # the generator's own timeout is the longest legitimate wait of a turn: the budget leaves room for it
        budget_s = rs.turn_budget_s or max(60.0, settings.openai.timeout_s + 30.0)
        stages = [
            LoadHistory(self.sessions, rs.history_turns),
            Retrieve(self.retriever, budget_s=budget_s, context_chars=rs.context_chars),
            Generate(self.generator, self.extractive, budget_s=budget_s),
            Persist(self.sessions, self.journal),
        ]
        if settings.log_message_contents and settings.message_log_key is not None:
            stages.append(
                RecordContents(EncryptedMessageLog(settings.log_dir, settings.message_log_key.get_secret_value()))
            )
        self.pipeline = ChatPipeline(stages)
        self.health = HealthChecks()
        self.health.add("database", lambda: ping(self.db.engine))
        self.health.add("vector_store", self.vectors.check, critical=False)  # BM25 still answers
        # embedding a word costs ~20 ms of CPU: a pass is trusted for 30 s (the alert engine samples every 3 s);
        # it waits for a free engine half the health timeout, so it never hangs behind questions and says why
        self.health.add(
            "embedding",
            lambda: self.embedder.inner.check(self.health.timeout_s / 2),
            critical=False,
            recheck_passed_s=30.0,
        )
        self.health.add("generator", self.generator.check, critical=False)  # extractive still answers
        self.health.add("disk", self._check_disk)
        HEALTH_COLLECTOR.checks = self.health  # health as metrics, for the alert rules and Prometheus
        a = settings.alerts
        self.incidents = IncidentStore(self.db)
        self.silences = SilenceStore(self.db)
        self.notifier = Notifier([build_channel(c) for c in a.channels], self.db, self.incidents)
        if a.channels:
            self.health.add("notifications", self.notifier.check, critical=False)
        router = Router(a.routing, self.incidents, self.silences, self.notifier.submit, a.external_url)
        self.alerts: AlertService | None = (
            AlertService(
                metrics.REGISTRY,
                a.rules_file,
                eval_interval=a.eval_interval,
                history_s=a.history_s,
                stall_after=a.stall_after,
                heartbeat_url=reveal(a.heartbeat_url),
                heartbeat_interval=a.heartbeat_interval,
                router=router,
                recorder=SignalRecorder(settings.signal_dir, a.record_retention_h * 3600),
                record_interval=a.record_interval,
                on_stall=self._evaluation_stalled,
                on_evaluated=lambda changes, t: self.remediation.observe(changes, t),
            )
            if a.enabled
            else None
        )
        self.started_at = time.time()
        self.draining = False
        self._stop = threading.Event()
        self._replayer: threading.Thread | None = None
        self.restart_requested: str | None = None  # set by process.restart: `ragvigil serve` drains, exits 75
        self.remediation = build_remediation(self)  # last: its actions act on the subsystems above
        self.actions = self.remediation.actions

    def _evaluation_stalled(self, stalled: bool, since: float) -> None:
        """The watchdog's own alert: filed and notified without the (stalled) evaluation loop."""
        labels = {"alertname": "AlertEvaluationStalled", "severity": "P1"}
        notice = AlertNotice(
            labels,
            {"summary": "ragvigil's alert evaluation has stalled: alerts are not being raised"},
            "firing" if stalled else "resolved",
            datetime.fromtimestamp(since, UTC),
            None if stalled else datetime.now(UTC),
        )
        ids = self.incidents.record([notice], '{}:{alertname="AlertEvaluationStalled"}')
        self.notifier.submit(Notification('{}:{alertname="AlertEvaluationStalled"}', labels, [notice], ids))

    def ensure_admin_key(self) -> str | None:
        """The first start's admin key (see ``ops.admin_key``); returned only when made just now."""
        if not self.settings.first_start_admin_key:
            return None
        return ensure_admin_key(self.keys, self.settings.data_dir)

    def startup_problems(self, host: str | None = None) -> list[str]:
        """Why this instance must not serve, in any profile.

        No active admin key where keys are required; routes open without a key bound to an address
        other people reach (``host``: the bind address, default ``settings.host``); a default secret
        in production.
        """
        problems = []
        if self.settings.auth_required and not self.keys.has_active_admin():
            problems.append("no active admin API key: create one with `ragvigil keys create NAME --role admin`")
        if exposed := open_routes_exposed(self.settings, host):
            problems.append(exposed)
        key = self.settings.openai.api_key.get_secret_value().lower()
        if self.settings.profile.value == "production" and key in DEFAULT_SECRETS:
            problems.append("openai.api_key is a well-known default secret; set a real one")
        return problems

    def _check_disk(self) -> None:
        free = shutil.disk_usage(self.settings.data_dir).free
        if free < self.settings.min_free_disk_mb * 1024 * 1024:
            raise OSError(f"only {free // (1024 * 1024)} MB free under {self.settings.data_dir}")

    def start_background(self) -> None:
        """Background work of a serving instance: vector filling and journal replay."""
        if self.settings.background_embedding:
            try:
                requeued = self.filler.resync()
                if requeued:
                    log.warning("vector_index_resync", extra={"requeued_chunks": requeued})
            except Exception:
                log.exception("vector_index_resync_failed")
            self.filler.start()
        self._replayer = threading.Thread(target=self._replay_loop, name="journal-replay", daemon=True)
        self._replayer.start()
        self.notifier.start()
        if self.alerts is not None:
            self.alerts.start()

    def replay_journal(self) -> int:
        """Replay journaled turns; an entry the database refuses is set aside, not retried forever."""
        try:
            moved = self.journal.replay(self.sessions)
        finally:
            metrics.JOURNAL_PENDING.set(len(self.journal.pending()))
            metrics.JOURNAL_REJECTED_TURNS.set(len(self.journal.rejected()))
        if moved:
            log.info("journal_replayed", extra={"turns": moved})
        return moved

    def enforce_log_retention(self, now: datetime | None = None) -> RetentionReport:
        """Drop rotated log lines older than their level's retention (run at start and daily)."""
        policy = RetentionPolicy(days=dict(self.settings.log_retention_days))
        report = enforce_retention(self.settings.log_dir, policy, now=now)
        if report.dropped_total:
            log.info("log_retention_enforced", extra={"dropped": dict(report.dropped), "files": report.files_scanned})
        return report

    def _replay_loop(self) -> None:
        next_retention = 0.0
        while not self._stop.wait(5.0):
            if time.monotonic() >= next_retention:
                self._safe(self.enforce_log_retention, None)
                next_retention = time.monotonic() + 24 * 3600
            metrics.VECTORS_PENDING.set(self._safe(self.ingestor.pending_vectors, 0))
            # the alert clears once a person has dealt with the set-aside entries
            metrics.JOURNAL_REJECTED_TURNS.set(len(self.journal.rejected()))
            if self.journal.pending():
                self._safe(self.replay_journal, 0)

    @staticmethod
    def _safe(fn, default):  # type: ignore[no-untyped-def]
        try:
            return fn()
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError):
                metrics.DATABASE_ERRORS.labels("background").inc()
            log.warning("background_task_failed", extra={"task": fn.__name__, "error": str(exc)})
            return default

    def keep_unfinished_turns(self) -> int:
        """Journal every turn still in flight (a shutdown that cannot wait longer); returns how many."""
        persist = next((s for s in self.pipeline.stages if isinstance(s, Persist)), None)
        kept = 0
        for turn in self.pipeline.in_flight() if persist is not None else []:
            try:
                kept += persist.keep_unfinished(turn)  # type: ignore[union-attr]
            except OSError as exc:
                log.error("unfinished_turn_lost", extra={"session_id": turn.session_id, "error": str(exc)})
        if kept:
            log.warning("unfinished_turns_journaled", extra={"turns": kept})
        return kept

    def close(self) -> None:
        self.keep_unfinished_turns()  # a no-op unless a shutdown cut turns short
        self._stop.set()
        if self.alerts is not None:
            self.alerts.stop()
        self.notifier.stop()
        if HEALTH_COLLECTOR.checks is self.health:
            HEALTH_COLLECTOR.checks = None
        self.filler.stop()
        self.pipeline.close()
        self.health.close()
        if self.generator is not self.extractive:
            self.generator.close()  # type: ignore[attr-defined]
        self.db.dispose()


def sample_kb_path() -> Path:
    """The bundled sample help centre (in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "samples" / "helpcentre"
