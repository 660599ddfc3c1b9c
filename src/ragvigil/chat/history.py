"""A session's messages as its owner sees them: the database merged with journaled turns.

Why: while the database is down, and after it is back until the replay has run (every few
seconds), turns accepted with 2xx live only in the journal. A read that skipped them would show
the user a gap in their own conversation. So every read here:

* reads the journal first, then the database: a replay in between moves a turn from the one to
  the other, never out of both;
* drops journaled copies of messages the database has (dedupe by message id) and orders the
  rest by time;
* shows a journaled turn only to the owner it was written for (caller and ``user_id``), the same
  rule as for a stored session: a journaled turn of alice is never shown to bob.

While the database is down the journal alone answers for a session only when it holds the
session's beginning (the turn that opened it): otherwise the older part is unknown, and a read
fails as before (503) rather than show a history with a hole in it. The history a turn is
answered with takes what it can get, and the turn says it is degraded.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from ragvigil.chat.journal import Journal, JournalEntry
from ragvigil.chat.sessions import SessionNotFound, SessionOwner, SessionStore, StoredMessage
from ragvigil.storage.errors import is_outage
from ragvigil.storage.models import Message


class SessionHistory:
    """History reads over the database and the journal (see the module docstring for the rules)."""

    def __init__(self, sessions: SessionStore, journal: Journal) -> None:
        self.sessions = sessions
        self.journal = journal

    def owner(self, session_id: str) -> SessionOwner:
        """Whose session this is: the database says, else the journaled turn that opened it."""
        opener = _opener(self.journal.entries_for(session_id))
        try:
            return self.sessions.owner(session_id)
        except SessionNotFound:
            if opener is None:
                raise
            return opener
        except SQLAlchemyError as exc:
            if opener is None or not is_outage(exc):
                raise
            return opener

    def messages(self, session_id: str, owner: SessionOwner) -> list[Message | StoredMessage]:
        """Every message of ``owner``'s session (the caller has checked who may read it)."""
        entries = self.journal.entries_for(session_id)
        journaled = _messages_of(entries, owner)
        try:
            rows: list[Message | StoredMessage] = list(self.sessions.messages(session_id))
        except SessionNotFound:
            if not journaled:
                raise
            rows = []
        except SQLAlchemyError as exc:
            if not is_outage(exc) or _opener(entries) != owner:
                raise
            rows = []
        return merge(rows, journaled)

    def recent(self, session_id: str, turns: int, owner: SessionOwner) -> tuple[list[tuple[str, str]], str | None]:
        """The last ``turns`` user/assistant pairs for a turn's prompt, and why they may be incomplete.

        Raises ``SessionNotFound`` when the session is neither ``owner``'s in the database nor in the journal.
        """
        merged, problem = self.recent_messages(session_id, 2 * turns, owner)
        return [(m.role, m.content) for m in merged], problem

    def recent_messages(
        self, session_id: str, count: int, owner: SessionOwner
    ) -> tuple[list[Message | StoredMessage], str | None]:
        """The last ``count`` messages, whole (sources, analyses), and why they may be incomplete.

        One read serves a turn's prompt history and the hand-off policy's look back (``Turn.earlier``).
        Raises ``SessionNotFound`` as ``recent`` does.
        """
        journaled = _messages_of(self.journal.entries_for(session_id), owner)
        problem = None
        try:
            rows: list[Message | StoredMessage] = list(self.sessions.recent(session_id, count, owner))
        except SessionNotFound:
            if not journaled:
                raise
            rows = []
        except SQLAlchemyError as exc:
            rows, problem = [], type(exc).__name__ + ("; journaled turns only" if journaled else "")
        return (merge(rows, journaled)[-count:] if count > 0 else []), problem

    def check_owner(self, session_id: str, owner: SessionOwner) -> None:
        """Raise ``SessionNotFound`` unless ``owner`` may continue the session.

        During a database outage the turn goes on (it is journaled under its own owner and the
        replay keeps it out of anyone else's session), as a turn that is not streamed does.
        """
        self.recent(session_id, 0, owner)


def merge(rows: list[Message | StoredMessage], journaled: list[StoredMessage]) -> list[Message | StoredMessage]:
    """Stored rows plus the journaled messages they lack, by time (stored order kept for equal times)."""
    if not journaled:
        return rows
    stored = {m.id for m in rows}
    out = rows + [m for m in journaled if m.id not in stored]
    out.sort(key=lambda m: m.created_at)
    return out


def _opener(entries: list[JournalEntry]) -> SessionOwner | None:
    """The owner of the journaled turn that opened the session, if the journal holds it."""
    return next((SessionOwner(e.owner, e.user_id) for e in entries if e.new_session), None)


def _messages_of(entries: list[JournalEntry], owner: SessionOwner) -> list[StoredMessage]:
    return [m for e in entries if SessionOwner(e.owner, e.user_id) == owner for m in e.messages]
