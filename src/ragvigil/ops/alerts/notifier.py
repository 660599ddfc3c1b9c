"""Deliver notifications to channels from a worker thread, with retries, a delivery log and channel health.

Evaluation never waits for a receiver: the router only enqueues. Each delivery is retried with
exponential backoff (tenacity), written to the ``deliveries`` table and to the incident's timeline,
and counted. A channel whose last three deliveries failed is *down*: ``/health`` reports it,
``ragvigil_notification_channel_up`` drops to 0 and the NotificationChannelFailing rule fires (and is
delivered through the channels that still work).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ragvigil.ops import metrics
from ragvigil.ops.alerts.channels import Channel, DeliveryError, Notification
from ragvigil.ops.alerts.incidents import IncidentStore
from ragvigil.storage.db import Database
from ragvigil.storage.models import Delivery

log = logging.getLogger(__name__)

DOWN_AFTER = 3  # consecutive failed deliveries


@dataclass
class DeliveryResult:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None


@dataclass
class ChannelHealth:
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None

    @property
    def up(self) -> bool:
        return self.consecutive_failures < DOWN_AFTER


class Notifier:
    def __init__(
        self,
        channels: list[Channel],
        db: Database | None = None,
        incidents: IncidentStore | None = None,
        backoff_s: float = 1.0,
        max_queue: int = 1000,
    ) -> None:
        self.channels = {c.settings.name: c for c in channels}
        self.db = db
        self.incidents = incidents
        self.backoff_s = backoff_s
        self.health = {name: ChannelHealth() for name in self.channels}
        self._queue: queue.Queue[Notification | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        for name in self.channels:
            metrics.NOTIFICATION_CHANNEL_UP.labels(name).set(1)

    # --- asynchronous path -----------------------------------------------------------------------
    def submit(self, n: Notification) -> None:
        if not self.channels:
            return  # nobody to tell: incidents still record everything
        try:
            self._queue.put_nowait(n)
        except queue.Full:
            log.error("notification_dropped", extra={"group": n.group_key, "reason": "queue full"})

    def start(self) -> None:
        if self._thread is None and self.channels:
            self._thread = threading.Thread(target=self._work, name="alert-notifier", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued notification was handled (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def _work(self) -> None:
        while True:
            n = self._queue.get()
            try:
                if n is None:
                    return
                self.deliver(n)
            except Exception:
                log.exception("notification_failed_unexpectedly")
            finally:
                self._queue.task_done()

    # --- one notification, every channel that wants it ------------------------------------------
    def deliver(self, n: Notification, only: str | None = None) -> list[DeliveryResult]:
        results = []
        for name, channel in self.channels.items():
            if only is not None and name != only:
                continue
            if only is None and n.severity not in channel.settings.severities:
                continue
            results.append(self._deliver_one(channel, n))
        return results

    def _deliver_one(self, channel: Channel, n: Notification) -> DeliveryResult:
        name = channel.settings.name
        attempts = 0
        error: str | None = None
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(channel.settings.attempts),
                wait=wait_exponential(multiplier=self.backoff_s, max=30),
                retry=retry_if_exception_type(DeliveryError),
                reraise=True,
            ):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    channel.send(n)
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a bug in a channel must not kill the worker
            error = f"{type(exc).__name__}: {exc}"
        result = DeliveryResult(name, error is None, attempts, error)
        self._record(result, n)
        return result

    def _record(self, r: DeliveryResult, n: Notification) -> None:
        h = self.health.setdefault(r.channel, ChannelHealth())
        if r.ok:
            h.consecutive_failures, h.last_error, h.last_ok_at = 0, None, time.time()
        else:
            h.consecutive_failures += 1
            h.last_error = r.error
            log.warning("notification_failed", extra={"channel": r.channel, "error": r.error, "attempts": r.attempts})
        metrics.NOTIFICATIONS.labels(r.channel, "sent" if r.ok else "failed").inc()
        metrics.NOTIFICATION_CHANNEL_UP.labels(r.channel).set(1 if h.up else 0)
        detail = {"channel": r.channel, "status": n.status, "attempts": r.attempts, "error": r.error}
        try:
            if self.db is not None:
                with self.db.session(write=True) as s:
                    for incident_id in n.incident_ids or [None]:
                        s.add(
                            Delivery(
                                channel=r.channel,
                                incident_id=incident_id,
                                group_key=n.group_key,
                                status=n.status,
                                outcome="sent" if r.ok else "failed",
                                attempts=r.attempts,
                                error=r.error,
                                alerts=len(n.alerts),
                            )
                        )
            if self.incidents is not None:
                for incident_id in n.incident_ids:
                    self.incidents.add_event(incident_id, "notified" if r.ok else "notification_failed", detail)
        except Exception as exc:  # the database may be the thing that is down
            log.warning("delivery_log_failed", extra={"error": str(exc)})

    def check(self) -> None:
        """For ``/health``: raise while a channel is down."""
        down = {name: h.last_error for name, h in self.health.items() if not h.up}
        if down:
            raise RuntimeError("notification channel(s) down: " + "; ".join(f"{k}: {v}" for k, v in down.items()))

    def deliveries(self, limit: int = 100, channel: str | None = None) -> list[dict[str, object]]:
        if self.db is None:
            return []
        from sqlalchemy import select

        with self.db.session() as s:
            q = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
            if channel:
                q = q.where(Delivery.channel == channel)
            return [
                {
                    "at": d.at,
                    "channel": d.channel,
                    "incident_id": d.incident_id,
                    "group_key": d.group_key,
                    "status": d.status,
                    "outcome": d.outcome,
                    "attempts": d.attempts,
                    "error": d.error,
                    "alerts": d.alerts,
                }
                for d in s.scalars(q)
            ]
