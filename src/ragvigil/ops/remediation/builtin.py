"""The actions over ragvigil's own parts: replay the journal, clear the query cache, re-queue
vectors, request a restart. Each reports what it changed, or raises ``NothingChanged``."""

from __future__ import annotations

import logging
from typing import Any

from ragvigil.ops.remediation.actions import ActionError, ActionRegistry, NothingChanged

log = logging.getLogger(__name__)

# EX_TEMPFAIL: "try again later". Non-zero, so systemd (Restart=on-failure) and Kubernetes start it again
RESTART_EXIT_CODE = 75


def register_builtin(actions: ActionRegistry, rt: Any) -> None:
    """Register the actions whose subsystem this runtime has (journal, query cache, vector filler, restart)."""
    if getattr(rt, "journal", None) is not None and hasattr(rt, "replay_journal"):
        actions.register(
            "journal.replay",
            lambda p: _replay_journal(rt),
            describe="write the journaled chat turns into the database now",
        )
    if callable(getattr(getattr(rt, "embedder", None), "clear", None)):
        actions.register("cache.clear", lambda p: _clear_cache(rt.embedder), describe="empty the query-embedding cache")
    if getattr(rt, "filler", None) is not None:
        actions.register(
            "vectors.requeue",
            lambda p: _requeue_vectors(rt.filler),
            describe="re-queue the chunks whose vectors are missing from the index, and wake the filler",
        )
    if hasattr(rt, "restart_requested"):
        actions.register(
            "process.restart",
            lambda p: request_restart(rt, str(p.get("reason") or "requested by remediation")),
            describe=f"drain, then exit with status {RESTART_EXIT_CODE} so the supervisor starts the process again",
        )


def _replay_journal(rt: Any) -> str:
    before = len(rt.journal.pending())
    if not before:
        raise NothingChanged("the journal is empty")
    moved = rt.replay_journal()  # raises when the database is still unavailable
    left = len(rt.journal.pending())
    if not moved and left >= before:
        raise ActionError(f"no journaled turn was replayed ({left} still pending)")
    return f"replayed {moved} journaled turn(s); {left} still pending"


def _clear_cache(embedder: Any) -> str:
    dropped = embedder.clear()
    if not dropped:
        raise NothingChanged("the query-embedding cache was already empty")
    return f"dropped {dropped} cached query embedding(s)"


def _requeue_vectors(filler: Any) -> str:
    requeued = filler.resync()
    if not requeued:
        raise NothingChanged("no chunk was missing its vector")
    filler.wake()
    return f"re-queued {requeued} chunk(s) for embedding"


def request_restart(rt: Any, reason: str) -> str:
    """Ask the serving process to drain and exit non-zero; never signals or kills anything itself."""
    if rt.restart_requested:
        raise NothingChanged(f"a restart is already requested ({rt.restart_requested})")
    rt.restart_requested = reason[:256]
    log.warning("restart_requested", extra={"reason": rt.restart_requested})
    return f"restart requested: the process drains and exits with status {RESTART_EXIT_CODE}"
