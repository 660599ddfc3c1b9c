"""Conversation contents for later review, encrypted at rest (Fernet), off by default.

Ordinary logs never carry message text. When an operator turns this on, each turn is
appended as one Fernet token per line to ``logs/messages.enc``; only someone holding the key
can read it back (``ragvigil logs messages``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# cryptography (~7 MB of modules) is imported when a log is opened or a key made: the log is off by default

FILE_NAME = "messages.enc"


class MessageLogKeyError(Exception):
    """The key cannot decrypt the file (wrong or rotated key)."""


class EncryptedMessageLog:
    def __init__(self, log_dir: Path, key: str) -> None:
        from cryptography.fernet import Fernet

        self.path = log_dir / FILE_NAME
        self._fernet = Fernet(key.encode())
        self._lock = threading.Lock()
        log_dir.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        token = self._fernet.encrypt(json.dumps(record, ensure_ascii=False, default=str).encode())
        with self._lock, open(self.path, "ab") as fh:
            fh.write(token + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self, session_id: str | None = None) -> Iterator[dict[str, Any]]:
        from cryptography.fernet import InvalidToken

        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(self._fernet.decrypt(line))
                except InvalidToken:
                    raise MessageLogKeyError(f"line {n} of {self.path} does not decrypt with this key") from None
                if session_id is None or record.get("session_id") == session_id:
                    yield record


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def turn_record(
    session_id: str | None, request_id: str | None, user_id: str | None, question: str, answer: str
) -> dict:
    return {
        "at": datetime.now(UTC).isoformat(),
        "session_id": session_id,
        "request_id": request_id,
        "user_id": user_id,
        "question": question,
        "answer": answer,
    }
