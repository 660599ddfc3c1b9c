"""The manifest inside every backup: what it holds, with a checksum per file and the counts to compare.

Why: a restore is only trusted when it can be checked against what was there when the backup was
made — the schema revision, every file's sha256 and size, the rows of each table and the vectors of
each knowledge base. ``verify`` and ``restore`` refuse a file whose members differ from this list.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT = 1
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a manifest is a few KB per thousand files; more is not ours


@dataclass
class FileEntry:
    sha256: str
    size: int


@dataclass
class BackupManifest:
    backup_id: str
    ragvigil_version: str
    created_at: str  # ISO 8601, UTC
    backend: str  # sqlite | postgresql
    schema_revision: str | None
    encrypted: bool
    files: dict[str, FileEntry] = field(default_factory=dict)  # member name → checksum and size
    row_counts: dict[str, int] = field(default_factory=dict)  # table → rows
    vector_counts: dict[str, int] = field(default_factory=dict)  # knowledge base → vectors
    index_kind: str = "flat"
    secrets_included: bool = False
    duration_s: float | None = None
    originals: int | None = None  # kept originals in the archive (data/originals/...); None: not counted (older)
    originals_backend: str = "filesystem"  # where the instance kept them: filesystem | s3
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> BackupManifest:
        """Parse a manifest; ``ValueError`` on anything that is not one."""
        data: Any = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a ragvigil backup manifest of format {FORMAT}")
        files = data.get("files")
        if not isinstance(files, dict):
            raise ValueError("manifest has no file list")
        data["files"] = {str(k): FileEntry(str(v["sha256"]), int(v["size"])) for k, v in files.items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
