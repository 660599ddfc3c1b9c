"""A write-ahead journal for chat turns the database could not take.

Why: a message accepted with 2xx must never be lost. When the database write fails, the
turn is written here (one fsynced file per turn) and replayed into the database later.
Replay is idempotent: message ids that are already stored are skipped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from ragvigil.chat.sessions import LEGACY_OWNER, SessionStore, StoredMessage

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(
        self, session_id: str, kb: str, user_id: str | None, messages: list[StoredMessage], owner: str = LEGACY_OWNER
    ) -> Path:
        entry = {
            "session_id": session_id,
            "owner": owner,
            "kb": kb,
            "user_id": user_id,
            "messages": [asdict(m) | {"created_at": m.created_at.isoformat()} for m in messages],
        }
        path = self.dir / f"{messages[0].created_at.strftime('%Y%m%dT%H%M%S%f')}-{messages[0].id}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(entry, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def pending(self) -> list[Path]:
        return sorted(self.dir.glob("*.json"))

    def replay(self, store: SessionStore) -> int:
        """Move journaled turns into the database, oldest first; stops at the first failure."""
        moved = 0
        for path in self.pending():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.error("journal_entry_unreadable", extra={"path": str(path)})
                path.rename(path.with_suffix(".bad"))
                continue
            msgs = [
                StoredMessage(**(m | {"created_at": datetime.fromisoformat(m["created_at"])}))
                for m in entry["messages"]
            ]
            # entries written before sessions had owners carry none: their sessions become legacy ones
            owner = entry.get("owner", LEGACY_OWNER)
            store.append(entry["session_id"], entry["kb"], entry["user_id"], msgs, owner=owner)
            path.unlink()
            moved += 1
        return moved
