"""The soft limit on open files, raised to the hard one: every connection is a file descriptor.

Why: Linux starts most processes at a soft limit of 1,024 descriptors under a hard limit many times
that. A server at the soft limit fails ``accept()`` (EMFILE) while clients wait in the backlog, and
a drill's open-loop burst at the soft limit queues its own requests for a connection, so it measures
its own waiting. Raising the soft limit up to the hard one needs no privilege (Go's runtime does the
same at start-up since 1.19).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

__all__ = ["raise_open_files_limit"]


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (where the platform allows); returns the soft limit now."""
    try:
        import resource
    except ImportError:  # not on a POSIX system: nothing to raise
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # e.g. macOS caps the soft limit below an unlimited hard one
            log.debug("open_files_limit_kept", extra={"soft": soft, "hard": hard, "error": str(exc)})
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
