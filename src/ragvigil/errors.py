"""One hierarchy for the errors the API shows: each class carries its HTTP status and error code.

Code below the API raises these (or subclasses of them) and the API maps every one with a single
handler, so a new kind of failure needs a class here, not a handler there. A subclass may set
``retry_after`` (seconds; every 503 carries one) and ``field`` (the input at fault, for a 422).
The message the client sees is ``public_message()``: by default the exception's text, but a 5xx
class says something fixed, so internal detail stays in the log.

This module imports only the standard library: every layer imports it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["DependencyUnavailable", "NotFound", "RagvigilError", "UnstorableInput"]


class RagvigilError(Exception):
    """An error with a place in the API: ``status`` and ``code`` of its JSON body ``{"code", "message"}``."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retry_after: ClassVar[int | None] = None  # seconds, sent as Retry-After
    field: ClassVar[str | None] = None  # the request field at fault (422s)
    message_template: ClassVar[str | None] = None  # "... {arg}": the message built from the first argument
    log_event: ClassVar[str | None] = None  # logged at ERROR when the API answers with it (5xx)

    def public_message(self) -> str:
        """What the client is told."""
        if self.message_template is not None:
            return self.message_template.format(arg=self.args[0] if self.args else "")
        return str(self)


class NotFound(RagvigilError, LookupError):
    """Something the request names does not exist (its name or id is the first argument).

    The domain modules define the kinds (``SessionNotFound`` in ``chat.sessions``,
    ``KnowledgeBaseNotFound`` in ``knowledge.catalog``, ``DocumentNotFound`` in ``knowledge.ingest``).
    """

    status = 404
    code = "not_found"


class UnstorableInput(RagvigilError, ValueError):
    """The database refused the input's values: a fault of the input, not an outage (never retried)."""

    status = 422
    code = "unstorable_input"


class DependencyUnavailable(RagvigilError):
    """A dependency the request cannot do without is down: a 503 the client may retry."""

    status = 503
    code = "dependency_unavailable"
    retry_after = 5
    message_template = "a required dependency is unavailable; try again shortly"
    log_event = "dependency_unavailable"
