"""Making a rename durable: the file's own fsync does not persist its directory entry.

The journal, the kept originals and the backups all write a temporary file, fsync it, rename it into
place and then fsync the directory, so a crash leaves either the old state or the whole new file.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename or a new file in it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
