"""The admin key a fresh instance makes for its owner, kept in ``<data dir>/admin.key``.

Ops routes and deletions need a key in every profile, so a new instance would lock its own
operator out. The first start therefore creates one admin key, prints it once and writes it to a
file only the owner can read (0600), where the CLI finds it without being told. It is created once:
when the file exists, or any active admin key exists, nothing is made.
"""

from __future__ import annotations

import os
from pathlib import Path

from ragvigil.ops.access import KeyStore, Role

FILE_NAME = "admin.key"
KEY_NAME = "first-start admin"
MAX_KEY_BYTES = 512  # a key is ~46 characters; anything longer is not ours


def admin_key_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def read_admin_key(data_dir: Path) -> str | None:
    """The stored admin key, or None when there is no readable file."""
    try:
        with admin_key_path(data_dir).open("rb") as f:
            text = f.read(MAX_KEY_BYTES).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text or None


def ensure_admin_key(keys: KeyStore, data_dir: Path) -> str | None:
    """Create and store the first admin key; returns it only when it was created just now."""
    path = admin_key_path(data_dir)
    if path.exists() or keys.has_active_admin():
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two instances starting at once on one data dir make one file, not a torn one
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    try:
        _, plain = keys.create(KEY_NAME, Role.admin)
        os.write(fd, (plain + "\n").encode())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.chmod(path, 0o600)  # the umask may have narrowed it further, never widened; make it exact
    return plain
