"""Which routes answer without an API key: one rule, checked in one place.

Everything under ``/api/v1/ops/`` and every ``DELETE`` needs a key with the right role in every
profile. With ``auth_required`` off (the ``development`` default) the routes a person needs to try
the service — chat, their own sessions, listing, searching and uploading to a knowledge base, analysing
a text, the API docs — answer a caller *on the loopback interface* without a key, as the anonymous principal.
A caller from any other address, or on any other route, must present a key.
"""

from __future__ import annotations

# path templates (as FastAPI routes name them) open without a key in development, by prefix
_OPEN_PREFIXES = (
    "/api/v1/chat",
    "/api/v1/sessions/",
    "/api/v1/kb",
    "/api/v1/analyze",
    "/v1/",
    "/openapi.json",
    "/docs",
)
# a session's stage timings are ops data (traces); a reindex rebuilds a whole knowledge base (admin)
_NEVER_OPEN_SUFFIXES = ("/timeline", "/reindex")


def open_without_key(method: str, path: str) -> bool:
    """Whether ``method path`` (a route template) may be called without a key in development."""
    if method.upper() == "DELETE" or path.startswith("/api/v1/ops/") or path.endswith(_NEVER_OPEN_SUFFIXES):
        return False
    return path.startswith(_OPEN_PREFIXES)
