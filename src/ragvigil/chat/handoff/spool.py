"""Hand-offs decided while the database was down, kept on disk until it is back.

Why: a crisis handed to a person must reach the queue even when the database failed at that
moment. Each hand-off is one fsynced JSON file (the journal's pattern); ``replay`` writes them
through the store, oldest first, and stops at the next outage. Bounded by ``max_entries``: past
it the hand-off is refused loudly (logged at ERROR, counted by the caller), never silently.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SpoolFull(OSError):
    """The spool is at its bound."""


class HandoffSpool:
    def __init__(self, directory: Path, max_entries: int = 1000) -> None:
        self.dir = directory
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob("*.tmp"):  # a write cut short by a crash was never whole
            tmp.unlink(missing_ok=True)

    def pending(self) -> list[Path]:
        return sorted(self.dir.glob("*.json"))

    def write(self, record: dict[str, Any]) -> Path:
        """Keep one hand-off (``HandoffStore.create``'s arguments, as JSON) durably."""
        with self._lock:
            if len(self.pending()) >= self.max_entries:
                raise SpoolFull(f"the hand-off spool holds {self.max_entries} records already")
            stamp = datetime.fromisoformat(record["at"]).strftime("%Y%m%dT%H%M%S%f")
            path = self.dir / f"{stamp}-{record['id']}.json"
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(json.dumps(record, ensure_ascii=False).encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return path

    def read(self, path: Path) -> dict[str, Any] | None:
        """A spooled record, or None when it is unreadable (it is then renamed ``.bad`` and kept)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or "id" not in data:
                raise ValueError("not a hand-off record")
            return data
        except (OSError, ValueError) as exc:
            log.error("handoff_spool_unreadable", extra={"path": str(path), "error": str(exc)[:200]})
            path.rename(path.with_suffix(".bad"))
            return None
