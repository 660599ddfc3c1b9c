"""Whether retrieval uses vectors now: hybrid, or BM25 alone while the vector side is down.

Why: a vector store or embedder that fails makes every turn pay for the failure (a timeout,
an exception) before BM25 answers alone. After ``trip_after`` failures in a row the mode
switches to ``lexical_only``: turns skip the vector side at once (flagged degraded), and a
background probe tries the store and the embedder every ``probe_interval_s``. When both answer,
the mode goes back to ``hybrid`` by itself and the ``on_recover`` callbacks run (re-queue the
chunks whose vectors were missed meanwhile). An operator (or a remediation action) may force
``lexical_only``; a forced mode stays until ``restore``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from ragvigil.config import RetrievalModeSettings
from ragvigil.ops import metrics

log = logging.getLogger(__name__)

Mode = Literal["hybrid", "lexical_only"]
Probe = Callable[[], None]  # raises when the vector side cannot serve


class RetrievalMode:
    """The retrieval mode state machine; thread-safe, every change is logged and a metric."""

    def __init__(self, probe: Probe, settings: RetrievalModeSettings | None = None) -> None:
        self.probe = probe
        self.settings = settings or RetrievalModeSettings()
        self.on_recover: list[Callable[[], object]] = []
        self._lock = threading.Lock()
        self._mode: Mode = "hybrid"
        self._forced = False
        self._reason: str | None = None
        self._since = datetime.now(UTC)
        self._by: str | None = None
        self._failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        _export("hybrid")

    # -- what retrieval asks ---------------------------------------------------
    @property
    def lexical_only(self) -> bool:
        return self._mode == "lexical_only"

    def reason(self) -> str:
        return self._reason or "vector search is switched off"

    def record_success(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0

    def record_failure(self, reason: str) -> None:
        """A vector search or query embedding failed; enough in a row switch to lexical_only."""
        with self._lock:
            self._failures += 1
            trip = self._mode == "hybrid" and self._failures >= self.settings.trip_after
            if trip:
                self._set("lexical_only", f"{self._failures} vector failures in a row: {reason}"[:300], None)
        if trip:
            self._wake.set()

    # -- operator / remediation face -------------------------------------------
    def state(self) -> dict[str, object]:
        """``mode``, ``forced``, ``reason``, ``since`` (ISO time), ``by`` and the current failure streak."""
        with self._lock:
            return {
                "mode": self._mode,
                "forced": self._forced,
                "reason": self._reason,
                "since": self._since.isoformat(),
                "by": self._by,
                "failures_in_a_row": self._failures,
            }

    def force_lexical(self, reason: str, by: str) -> str:
        """Switch to lexical_only and keep it there until ``restore``; returns what changed."""
        with self._lock:
            before = self._mode, self._forced
            self._forced = True
            self._set("lexical_only", reason[:300], by)
        return f"retrieval mode {before[0]}{' (forced)' if before[1] else ''} -> lexical_only (forced)"

    def restore(self, by: str) -> str:
        """Back to automatic: hybrid at once if the vector side answers a probe, else lexical_only until it does."""
        with self._lock:
            self._forced = False
        ok, why = self._probe()
        with self._lock:
            if ok:
                self._failures = 0
                changed = self._set("hybrid", None, by)
            else:
                changed = self._set("lexical_only", f"probe failed: {why}"[:300], by)
        if ok and changed:
            self._recovered()
        self._wake.set()
        return f"retrieval mode automatic, now {self._mode}"

    # -- probing ----------------------------------------------------------------
    def probe_once(self) -> bool:
        """One probe while lexical_only and not forced; returns True when it switched back to hybrid."""
        with self._lock:
            if self._mode != "lexical_only" or self._forced:
                return False
        ok, why = self._probe()
        if not ok:
            log.debug("retrieval_probe_failed", extra={"error": why})
            return False
        with self._lock:
            if self._mode != "lexical_only" or self._forced:
                return False
            self._failures = 0
            self._set("hybrid", None, None)
        self._recovered()
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="retrieval-mode-probe", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.lexical_only:
                try:
                    self.probe_once()
                except Exception:  # keep probing; a broken recovery callback is logged
                    log.exception("retrieval_probe_crashed")
                self._stop.wait(self.settings.probe_interval_s)
            else:
                self._wake.wait(self.settings.probe_interval_s * 5)
                self._wake.clear()

    def _probe(self) -> tuple[bool, str | None]:
        try:
            self.probe()
        except Exception as exc:  # any failure of the probe means "not back yet"
            return False, f"{type(exc).__name__}: {exc}"[:300]
        return True, None

    def _recovered(self) -> None:
        for callback in list(self.on_recover):
            try:
                callback()
            except Exception:  # the next resync (at start, or the next recovery) catches up
                log.exception("retrieval_recover_callback_failed")

    def _set(self, mode: Mode, reason: str | None, by: str | None) -> bool:
        """Change the mode (lock held); returns whether it changed."""
        self._reason, self._by = reason, by
        if mode == self._mode:
            return False
        previous, self._mode, self._since = self._mode, mode, datetime.now(UTC)
        _export(mode)
        metrics.RETRIEVAL_MODE_CHANGES.labels(mode).inc()
        log.warning(
            "retrieval_mode_changed",
            extra={"from": previous, "to": mode, "reason": reason, "by": by, "forced": self._forced},
        )
        return True


def _export(mode: Mode) -> None:
    for m in ("hybrid", "lexical_only"):
        metrics.RETRIEVAL_MODE.labels(m).set(1 if m == mode else 0)


def vector_side_probe(store: object, embedder: object, timeout_s: float) -> Probe:
    """A probe that passes when the store takes a write and reads, and the embedder embeds a word."""

    def probe() -> None:
        store.check()  # type: ignore[attr-defined]
        check = getattr(embedder, "check", None) or embedder.inner.check  # type: ignore[attr-defined]
        check(timeout_s)

    return probe


def build_retrieval_mode(
    settings: RetrievalModeSettings, store: object, embedder: object, filler: object | None = None
) -> RetrievalMode:
    """The runtime's retrieval mode, probing ``store`` and the query ``embedder`` (the composition root calls this).

    With the vector ``filler``: the chunks whose vectors were missed are re-queued when hybrid is back.
    """
    mode = RetrievalMode(vector_side_probe(store, embedder, settings.probe_timeout_s), settings)
    if filler is not None:
        mode.on_recover.append(filler.requeue)  # type: ignore[attr-defined]
    return mode
