"""The composition root: builds and wires the parts of one ragvigil instance (used by the HTTP app and the CLI).

Why builders next to what they build (``knowledge.build``, ``providers.build``, ``chat.build``,
``ops.alerts.build``) rather than one big ``runtime`` package: each package knows the order its own
parts need and nothing else does, and a new subsystem (healing: the provider router, safe mode,
features, faults, remediation) brings its own ``build_*`` function and is wired here with one line,
an attribute of the runtime. ``Runtime`` holds the long-lived objects and starts and stops them; it
does no work of its own: the disk check is in ``ops.health``, the journal replay in ``chat.journal``,
log retention in ``ops.log_retention``, the watchdog's alert in ``ops.alerts.watchdog``, and what
must hold process-wide is set, and undone at ``close``, by ``ops.process.install_process_globals``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ragvigil.chat.build import build_pipeline, build_understanding, turn_budget_s
from ragvigil.chat.handoff import build_handoffs
from ragvigil.chat.history import SessionHistory
from ragvigil.chat.journal import Journal, JournalReplayer
from ragvigil.chat.pipeline import Persist
from ragvigil.chat.safe_mode import SafeMode
from ragvigil.chat.sessions import SessionStore
from ragvigil.chat.turn_writer import TurnWriter
from ragvigil.chat.understand import Understanding
from ragvigil.chat.understanding import EmotionAnalyzer, IntentClassifier, SafetyCheck
from ragvigil.config import Settings
from ragvigil.config_check import Problem
from ragvigil.knowledge.build import build_knowledge
from ragvigil.knowledge.embeddings import CachedQueryEmbedder
from ragvigil.knowledge.smoke import retrieval_smoke
from ragvigil.knowledge.vectorstore import VectorStore
from ragvigil.ops.access import AuditLog, KeyStore
from ragvigil.ops.admin_key import ensure_admin_key
from ragvigil.ops.admission import build_admission
from ragvigil.ops.admission.priority import verdict_check
from ragvigil.ops.alerts.build import build_alerting
from ragvigil.ops.backup.service import BackupService
from ragvigil.ops.canary import build_canary
from ragvigil.ops.diagnosis import build_diagnoser
from ragvigil.ops.diagnosis.worker import DiagnosisWorker
from ragvigil.ops.faults import build_faults
from ragvigil.ops.health import DEPENDENCIES, HealthChecks, disk_check
from ragvigil.ops.leader import LeaderOnly, build_leadership
from ragvigil.ops.log_retention import LogRetention
from ragvigil.ops.logfiles import RetentionReport
from ragvigil.ops.process import install_process_globals
from ragvigil.ops.remediation import build_remediation
from ragvigil.ops.shared import build_shared
from ragvigil.preflight import open_routes_exposed, start_problems
from ragvigil.providers.base import Generator
from ragvigil.providers.build import build_generation
from ragvigil.storage.db import Database, ping
from ragvigil.storage.schema import SchemaWatch, prepare_schema

log = logging.getLogger(__name__)

__all__ = ["Runtime", "open_routes_exposed", "sample_kb_path"]


class Background(Protocol):
    """Work a serving instance runs on its own threads: started by ``start_background``, stopped by ``close``."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def open_database(settings: Settings, apply_migrations: bool) -> Database:
    """The database, its schema brought to head or refused (``storage.schema.prepare_schema``: never a newer
    schema; behind only with ``database.migrate_on_start``, else ``SchemaRefused`` names what is missing)."""
    db = Database(settings.db_url)
    if apply_migrations:
        try:
            prepare_schema(db.engine, migrate_on_start=settings.database.migrate_on_start)
        except BaseException:
            db.dispose()
            raise
    return db


HEALTH_CACHE_S = 0.9
PROVIDER_CHECK_TRUST_S = 5.0


def build_health(
    settings: Settings, db: Database, vectors: VectorStore, embedder: CachedQueryEmbedder, generator: Generator
) -> HealthChecks:
    """The leaf checks of the dependency graph (``ops.health.DEPENDENCIES``): only a leaf moves readiness."""
    # every check must be a leaf of the graph, or it is refused; results are cached just under the alert
    # engine's 1 s step, so each P1 evaluation reads a fresh result (cached 2 s, a 1 s loop saw it every 3rd)
    health = HealthChecks(graph=DEPENDENCIES, cache_s=HEALTH_CACHE_S)
    health.add("database", lambda: ping(db.engine))
    health.add("vector_store", vectors.check, critical=False)  # BM25 still answers
    # embedding a word costs ~20 ms of CPU: a pass is trusted for 30 s (the alert engine samples every 3 s);
    # it waits for a free engine half the health timeout, so it never hangs behind questions and says why
    health.add("embedding", lambda: embedder.inner.check(health.timeout_s / 2), critical=False, recheck_passed_s=30.0)
    # extractive still answers; a pass (an HTTP call to the endpoint) is trusted 5 s, a failure re-checked each time
    health.add("generator", generator.check, critical=False, recheck_passed_s=PROVIDER_CHECK_TRUST_S)
    health.add("disk", disk_check(settings.data_dir, lambda: settings.min_free_disk_mb))
    return health


class Runtime:
    """Every long-lived object of one instance, built once from settings, one builder per subsystem."""

    def __init__(self, settings: Settings, *, apply_migrations: bool = True) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(settings, apply_migrations)
        self.schema = SchemaWatch(self.db.engine)  # the schema state readiness reports
        # fault injection for drills (admin-only, off by default): its hooks wrap the seams built below
        self.faults = build_faults(settings, self.db.engine, AuditLog(self.db))
        # Redis shared with the other replicas (limits, breakers, query cache); all in process without it
        self.shared = build_shared(settings, self.faults)
        # who runs the work done once per cluster (PostgreSQL lock, Redis lease, or always this one)
        self.leadership = build_leadership(settings, self.shared.replica, self.shared.link)
        k = build_knowledge(settings, self.db, self.faults, self.shared.cache)
        self.tokenizer, self.embedder, self.vectors, self.catalog = k.tokenizer, k.embedder, k.vectors, k.catalog
        self.ingestor, self.retriever, self.filler = k.ingestor, k.retriever, k.filler
        self.reindexer = k.reindexer  # reindex jobs; stopped by close, the old generation left serving
        self.sentence_vectors = self.filler.sentences  # the passages' sentence vectors a turn reads (one query)
        self.sessions, self.keys, self.audit = SessionStore(self.db), KeyStore(self.db), AuditLog(self.db)
        js = settings.journal  # the turns of concurrent requests committed in one transaction
        self.turn_writer = TurnWriter(self.sessions, js.write_batch_max, js.write_linger_ms / 1000)
        self.journal = Journal.build(settings.data_dir / "journal", settings.journal)
        self.history = SessionHistory(self.sessions, self.journal)  # the database merged with journaled turns
        self.replayer = JournalReplayer(self.journal, self.sessions)
        self.extractive, self.router = build_generation(settings, self.tokenizer, wrap=self.faults.generator)
        self.generator: Generator = self.router  # providers in order, breakers, extractive last
        if (store := self.shared.breaker_store(self.router.names()[:-1])) is not None:
            self.router.share(store, self.shared.replica)  # a provider open on one replica is skipped by all
        # rate limits (shared counters with Redis), adaptive concurrency, priorities
        # (the queue's wait and size follow the turn budget: a queued request must still be answered within it)
        budget_s = turn_budget_s(settings, self.router.longest_timeout_s())
        self.admission = build_admission(settings.admission, self.db, self.shared.rate_limits, budget_s)
        self.features = self.admission.features  # non-core work shed under pressure
        self.safe_mode = SafeMode(settings.data_dir, settings.safe_mode)  # every answer the safe response while on
        # safety, emotion and intent of every turn (rt.safety, rt.emotion, rt.intents; None: not configured)
        self.understanding: Understanding = build_understanding(settings, self.embedder, self.generator)
        # the safety check the pipeline and the canary share, under the `safety` fault: whoever replaces it
        # wraps it, rt.safety = rt.faults.safety(check); the pipeline and the canary read it at every turn/run
        self.safety = self.faults.safety(self.understanding.safety)
        self.canary = build_canary(settings, lambda: self.safety, lambda text: self.embedder.embed_query(text, 1.0))
        # admission's crisis priority is the same check, lexicon only (no embedding before a request is admitted)
        self.admission.crisis = verdict_check(
            lambda text: None if self.safety is None else self.safety.check(text).crisis
        )
        # hand-off to a person: the queue (rt.handoffs.store, readable even with hand-off off), its spool
        # while the database is down, and the stage (in the pipeline only while handoff.enabled)
        self.handoffs = build_handoffs(settings.handoff, self.db, settings.data_dir, self.history)
        self.pipeline = build_pipeline(
            settings,
            self.sessions,
            self.history,
            self.retriever,
            self.generator,
            self.extractive,
            self.journal,
            longest_call_s=self.router.longest_timeout_s(),
            features=self.features,
            safe_mode=self.safe_mode,
            understanding=self.understanding,
            handoff=self.handoffs.stage if settings.handoff.enabled else None,
            look_back=self.handoffs.policy.look_back if settings.handoff.enabled else 0,
            sentence_vectors=self.sentence_vectors,
            turn_writer=self.turn_writer,
            answers_paused=lambda: bool(self.faults.list()),  # a drill's fault: answers are made afresh
        )
        self.health = build_health(settings, self.db, self.vectors, self.embedder, self.generator)
        for name in self.router.names()[:-1]:  # one optional check per remote provider, under generation
            self.health.add(
                f"provider:{name}",
                self.router.health_check(name),
                critical=False,
                recheck_passed_s=PROVIDER_CHECK_TRUST_S,
                needed_by="generation",
            )
        if self.shared.enabled:  # optional: without Redis each replica decides alone and still answers (degraded)
            self.health.add("redis", self.shared.check, critical=False, needed_by="chat")
        # an incident is diagnosed when it opens (the diagnoser, built below, reads the alert engine)
        alerting = build_alerting(
            settings,
            self.db,
            self.health,
            on_incident_opened=lambda i: self.diagnosis_worker.submit(i),  # diagnosed on a thread of its own
            on_evaluated=lambda changes, t: self.remediation.observe(changes, t),  # acts on firing alerts, verifies
        )
        self.incidents, self.silences, self.notifier = alerting.incidents, alerting.silences, alerting.notifier
        self.stall_alert, self.alerts = alerting.stall_alert, alerting.service
        self.diagnosis = build_diagnoser(
            settings, self.incidents, health=self.health, alerts=self.alerts, providers_status=self.router.status
        )
        self.diagnosis_worker = DiagnosisWorker(self.diagnosis.incident_opened, settings.diagnosis.queue_size)
        self.log_retention = LogRetention(settings.log_dir, settings.log_retention_days)
        # a shared vector server is filled by the leader alone; faiss files are each replica's own to fill
        self.vector_filling: LeaderOnly | None = None
        if settings.vector_store.backend == "chroma":
            self.vector_filling = LeaderOnly("vector_filler", self.leadership, self._start_filler, self.filler.stop)
        # started in this order by start_background, stopped in reverse by close; a subsystem appends its own.
        # Per replica: its own journal, spool, logs, gauges, retrieval mode, alerts; leader-only: see leader_status
        self.background: list[Background] = [
            self.leadership,  # first: the jobs after it ask it where they stand
            self.replayer,
            self.handoffs.replayer,
            self.log_retention,
            k.pending_gauge,
            k.quarantine_gauge,
            self.retriever.mode,
            self.notifier,
        ]
        if self.router.remote:
            self.background.append(self.router.overdue_watch)  # slow calls counted while they still run
        if self.canary is not None:  # before the alert loop, so its first run is under way when rules are read
            self.background.append(self.canary)
        self.background.append(self.diagnosis_worker)  # stopped after the alert loop that feeds it
        if self.alerts is not None:
            self.background.append(self.alerts)
        # API jobs on any replica; the schedule and its retention on the leader only
        self.backups = BackupService(settings, self.vectors.flush, retrieval_smoke, is_leader=self.leadership.is_leader)
        self.background.append(self.backups)
        self.restart_requested: str | None = None  # set by process.restart: `ragvigil serve` drains, exits 75
        self.remediation = build_remediation(self)  # last: its actions act on the subsystems above
        self.actions = self.remediation.actions
        self.started_at = time.time()
        self.draining = False
        self._process_globals = install_process_globals(settings, self.health)

    # the checkers live on ``understanding``, which the stages read on every turn: setting one here
    # (a test's stand-in, the canary switching the filter) takes effect on the next turn
    @property
    def safety(self) -> SafetyCheck | None:
        return self.understanding.safety

    @safety.setter
    def safety(self, check: SafetyCheck | None) -> None:
        self.understanding.safety = check

    @property
    def emotion(self) -> EmotionAnalyzer | None:
        return self.understanding.emotion

    @emotion.setter
    def emotion(self, analyzer: EmotionAnalyzer | None) -> None:
        self.understanding.emotion = analyzer

    @property
    def intents(self) -> IntentClassifier | None:
        return self.understanding.intent

    @intents.setter
    def intents(self, classifier: IntentClassifier | None) -> None:
        self.understanding.intent = classifier

    def ensure_admin_key(self) -> str | None:
        """The first start's admin key (see ``ops.admin_key``); returned only when made just now."""
        if not self.settings.first_start_admin_key:
            return None
        return ensure_admin_key(self.keys, self.settings.data_dir)

    def startup_problems(self, host: str | None = None) -> list[Problem]:
        """``preflight.start_problems`` with this instance's real admin-key state (``host``: the bind address)."""
        return start_problems(self.settings, host=host, admin_key=self.keys.has_active_admin())

    def start_background(self) -> None:
        """Background work of a serving instance: vector filling, journal replay, retention, alerts."""
        self.leadership.start()  # before the filler: on a shared vector server only the leader fills it
        if self.settings.background_embedding:
            if self.vector_filling is not None:
                self.vector_filling.start()
            else:
                self._start_filler()
        for job in self.background:
            job.start()

    def _start_filler(self) -> None:
        """Resync the index with the database, then fill in what it lacks (on a leader gain, with Chroma)."""
        try:
            requeued = self.filler.resync()
            if requeued:
                log.warning("vector_index_resync", extra={"requeued_chunks": requeued})
        except Exception:
            log.exception("vector_index_resync_failed")
        self.filler.start()

    def leader_status(self) -> dict[str, object]:
        """Who leads, and where this replica's once-per-cluster jobs stand (``running``, ``standby``, ``off``)."""
        filling = "per_replica" if self.vector_filling is None else self.vector_filling.state()
        if not self.settings.background_embedding:
            filling = "off"
        jobs = {"backup_schedule": self.backups.schedule_state(), "vector_filler": filling}
        return self.leadership.status() | {"jobs": jobs}

    def replay_journal(self) -> int:
        """Replay journaled turns now (``JournalReplayer.replay``)."""
        return self.replayer.replay()

    def enforce_log_retention(self, now: datetime | None = None) -> RetentionReport:
        """One retention pass now (``LogRetention.enforce``)."""
        return self.log_retention.enforce(now)

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
        self.reindexer.stop()  # a running reindex ends interrupted, its staged generation removed
        for job in reversed(self.background):  # each stop is a no-op for a job that never started
            job.stop()
        # after the jobs: a turn cut short stays in the journal for the next start, not half-replayed by
        # a replay pass that happened to run while this process was going away
        self.keep_unfinished_turns()  # a no-op unless a shutdown cut turns short
        if self.vector_filling is not None:
            self.vector_filling.stop()
        self.filler.stop()
        self.pipeline.close()
        self.turn_writer.close()
        self.health.close()
        self.router.close()
        self.admission.close()
        self.faults.close()
        self.shared.close()
        self._process_globals.undo()
        self.db.dispose()


def sample_kb_path() -> Path:
    """The bundled sample help centre (in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "samples" / "helpcentre"
