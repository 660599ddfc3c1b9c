"""Text the database can store, checked once at the edge.

Why: PostgreSQL refuses a NUL character in ``text`` columns, and no backend can encode a lone
UTF-16 surrogate as UTF-8. Such text used to be accepted, fail at the database write, and be
mistaken for an outage. Rejecting it where it enters (``StorableText`` on a request field) keeps
every backend alike and turns it into a 422 the caller can fix.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_reason(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None when it can."""
    m = _UNSTORABLE.search(value)
    if m is None:
        return None
    if m.group() == "\x00":
        return f"contains a NUL character (U+0000) at position {m.start()}, which cannot be stored"
    return f"contains a lone surrogate (U+{ord(m.group()):04X}) at position {m.start()}, which is not valid Unicode"


def check_storable(value: str) -> str:
    """Pydantic validator: the value unchanged, or ValueError saying what cannot be stored."""
    reason = unstorable_reason(value)
    if reason is not None:
        raise ValueError(f"text {reason}")
    return value


# the published schema says it too (no NUL); a lone surrogate cannot be sent as UTF-8 JSON at all
NO_NUL_PATTERN = r"^[^\u0000]*$"
StorableText = Annotated[str, AfterValidator(check_storable), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
"""A ``str`` field that must be storable: ``message: StorableText = Field(..., max_length=...)``."""
