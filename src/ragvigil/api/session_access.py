"""Who may use a chat session, and the checks a turn passes before its response starts.

A session belongs to the caller that opened it plus the ``user_id`` it gave: an anonymous
caller (auth off) owns its sessions as ``"anonymous"``, a keyed caller as ``"key:<key id>"``.
Anyone else is told the session does not exist (the same 404 as an unknown id, so ids cannot
be probed). Operators and admins may read another's session for support, never continue it;
each such read goes to the audit trail. Support reads need a real key: an anonymous caller is
never trusted with them, whatever role auth-off grants it.
"""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import client_address
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.chat.sessions import ANONYMOUS_OWNER, SessionNotFound, SessionOwner, key_owner
from ragvigil.ops.access import Principal, Role


def caller_owner(who: Principal) -> str:
    """The owner string of the sessions ``who`` opens."""
    return key_owner(who.key_id) if who.key_id is not None else ANONYMOUS_OWNER


def may_support_read(who: Principal) -> bool:
    return who.key_id is not None and who.role >= Role.operator


async def require_kb(rt: Runtime, kb: str) -> None:
    """An unknown knowledge base is a 404 before any work (and before a stream's 200 is sent)."""
    if not rt.catalog.known(kb):  # the usual case costs no thread hop
        await run_in_threadpool(rt.catalog.require, kb)


async def require_own_session(rt: Runtime, turn: Turn) -> None:
    """A turn continuing a session must be its owner's (checked before a stream starts)."""
    if turn.session_id is not None and not turn.new_session:
        await run_in_threadpool(rt.history.check_owner, turn.session_id, SessionOwner(turn.owner, turn.user_id))


async def require_readable(
    rt: Runtime, who: Principal, request: Request, session_id: str, user_id: str | None, view: str
) -> SessionOwner:
    """Let the owner read the session, or an operator/admin (audited); anyone else gets the unknown-session 404.

    Returns the session's owner (from the database, or from the journal before the turn that opened it is replayed).
    """
    owner = await run_in_threadpool(rt.history.owner, session_id)
    if owner == SessionOwner(caller_owner(who), user_id):
        return owner
    if not may_support_read(who):
        raise SessionNotFound(session_id)
    await run_in_threadpool(
        rt.audit.record,
        who,
        "session.read",
        "ok",
        f"session:{session_id}",
        client_address(request),
        {"view": view, "owner": owner.owner},
    )
    return owner
