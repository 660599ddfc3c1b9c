"""Safe mode: every message is answered with a fixed safe response while the rest of the turn still runs.

Why: when the answers themselves cannot be trusted (a safety filter down, a provider answering
nonsense), people must still hear something honest and be pointed to a human, and their messages
must still be stored. So safe mode is a stage, not a switch in front of the API: it settles the
turn's answer before retrieval (``Turn.settled_by``), and history, persistence and metrics run as
for any other turn.

The state is kept in a small JSON file in the data dir, written atomically, so a restart does not
quietly switch safe mode off. An unreadable file starts the instance *in* safe mode: when in
doubt, the safe side, and the ``SafeModeActive`` alert says so.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvigil.chat.pipeline import BaseStage
from ragvigil.config import SafeModeSettings
from ragvigil.ops import metrics

if TYPE_CHECKING:
    from ragvigil.chat.pipeline import Turn

log = logging.getLogger(__name__)

STATE_FILE = "safe_mode.json"
SETTLED_BY = "safe_mode"


class SafeMode:
    """The switch: ``enter(reason, by)``, ``leave(by)``, ``active``, ``status()``. Thread-safe."""

    def __init__(self, data_dir: Path, settings: SafeModeSettings) -> None:
        self.path = data_dir / STATE_FILE
        self.responses = {"en": settings.response_en, "zh": settings.response_zh}
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"active": False, "reason": None, "by": None, "since": None}
        self._persisted = True
        self._load()
        metrics.SAFE_MODE_ACTIVE.set(1 if self.active else 0)

    @property
    def active(self) -> bool:
        return bool(self._state["active"])

    def response(self, language: str) -> str:
        """The safe answer in the turn's language (English for any language without its own text)."""
        return self.responses.get(language, self.responses["en"])

    def enter(self, reason: str, by: str) -> dict[str, Any]:
        """Answer every message with the safe response from now on (also after a restart)."""
        return self._set(True, reason, by)

    def leave(self, by: str) -> dict[str, Any]:
        """Back to normal answers."""
        return self._set(False, None, by)

    def status(self) -> dict[str, Any]:
        """``active``, ``reason``, ``by``, ``since`` (ISO time of the last change), ``persisted``."""
        with self._lock:
            return {**self._state, "persisted": self._persisted}

    def _set(self, active: bool, reason: str | None, by: str) -> dict[str, Any]:
        with self._lock:
            was = bool(self._state["active"])
            if was == active and (not active or self._state["reason"] == reason):
                return {**self._state, "persisted": self._persisted, "changed": False}
            self._state = {"active": active, "reason": reason, "by": by, "since": datetime.now(UTC).isoformat()}
            metrics.SAFE_MODE_ACTIVE.set(1 if active else 0)
            try:
                self._write()
                self._persisted = True
            except OSError as exc:  # the switch holds in memory; a restart would bring back the last saved state
                self._persisted = False
                log.error("safe_mode_state_not_saved", extra={"path": str(self.path), "error": str(exc)})
            state = {**self._state, "persisted": self._persisted, "changed": True}
        log.warning("safe_mode_entered" if active else "safe_mode_left", extra={"reason": reason, "by": by})
        return state

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("active"), bool):
                raise ValueError("not a safe-mode state object")
        except (OSError, ValueError) as exc:
            log.error("safe_mode_state_unreadable", extra={"path": str(self.path), "error": str(exc)})
            self._state = {
                "active": True,
                "reason": f"safe-mode state file unreadable ({type(exc).__name__}); started in safe mode",
                "by": "ragvigil",
                "since": datetime.now(UTC).isoformat(),
            }
            return
        self._state = {k: data.get(k) for k in ("active", "reason", "by", "since")}
        if self.active:
            log.warning("safe_mode_active_at_start", extra={"reason": self._state["reason"], "by": self._state["by"]})


class SafeModeStage(BaseStage):
    """Placed after ``understand`` and before ``retrieve``: while safe mode is on, the turn's answer is the
    safe response -- unless the safety check already settled it (a crisis response with its hotlines is
    the better answer to a crisis message than the generic safe one)."""

    name = "safe_mode"

    def __init__(self, safe_mode: SafeMode) -> None:
        self.safe_mode = safe_mode

    def __call__(self, turn: Turn) -> None:
        if not self.safe_mode.active or turn.settled_by is not None:
            return
        turn.answer = self.safe_mode.response(turn.language)
        turn.sources = []
        turn.settled_by = SETTLED_BY
        turn.degrade("safe mode")  # counted by the pipeline's answer observer as kind="safe_mode"
