"""Tell a database that is unavailable from data it refuses.

Why: the two need opposite handling. An outage is retried later (a chat turn is journaled and
replayed); a refusal of the data will fail the same way every time, so retrying it only blocks
whatever comes after it.
"""

from __future__ import annotations

from sqlalchemy import exc as sa

_OUTAGES = (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, sa.TimeoutError)


def is_outage(exc: BaseException) -> bool:
    """The database could not be reached or did not answer; the same write may succeed later."""
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _OUTAGES)


def is_data_error(exc: BaseException) -> bool:
    """The database refused these values (bad text, too long, out of range): retrying cannot help.

    An IntegrityError is not counted here: two turns racing for the same session's next sequence
    number raise one too, and that write succeeds when retried.
    """
    if is_outage(exc):
        return False
    if isinstance(exc, sa.DataError):
        return True
    # a value the driver could not even send (e.g. not encodable) arrives as a bare StatementError
    return isinstance(exc, sa.StatementError) and not isinstance(exc, sa.DBAPIError)


def describe(exc: BaseException) -> str:
    """The error class and the driver's first line, never the statement's parameters (they hold user text)."""
    orig = str(getattr(exc, "orig", None) or "").strip()
    return f"{type(exc).__name__}: {orig.splitlines()[0][:300]}" if orig else type(exc).__name__
