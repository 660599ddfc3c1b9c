"""The one production-start check: every reason an instance must refuse to serve, in any profile.

Why one function: ``ragvigil serve`` (before it binds), the app's lifespan (``create_app``, also
under ``uvicorn --factory``) and ``ragvigil config check`` must agree, or an operator fixes what
``config check`` reports and the server still refuses (or the other way round). Each caller
passes what it knows: the bind address, and whether an active admin key exists (``None``: not
known here, e.g. the database is out of reach; the lifespan checks again with the real answer).
"""

from __future__ import annotations

from ragvigil.config import Settings
from ragvigil.config_check import Problem
from ragvigil.ops.access import is_loopback

DEFAULT_SECRETS = frozenset({"changeme", "change-me", "secret", "password", "default", "test", "sk-xxx"})
NO_ADMIN_KEY = "no active admin API key: create one with `ragvigil keys create NAME --role admin`"


def open_routes_exposed(settings: Settings, host: str | None = None) -> str | None:
    """Why routes open without a key must not be bound to ``host`` (default ``settings.host``), if so."""
    host = host if host is not None else settings.host
    if settings.auth_required or is_loopback(host):
        return None
    return (
        f"auth_required is off, so chat and knowledge-base routes answer without a key, but the bind address "
        f"{host!r} is not loopback: bind 127.0.0.1, or set RAGVIGIL_AUTH_REQUIRED=true to need a key everywhere"
    )


def start_problems(settings: Settings, *, host: str | None = None, admin_key: bool | None = None) -> list[Problem]:
    """Why this instance must not serve: open routes beyond loopback, no admin key where keys are
    required, a well-known default secret in production, an alert rule or canary probe file that does not load."""
    problems = []
    if settings.auth_required and admin_key is False:
        problems.append(Problem("error", "auth_required", NO_ADMIN_KEY))
    if exposed := open_routes_exposed(settings, host):
        problems.append(Problem("error", "host", exposed))
    if settings.profile.value == "production" and settings.openai.api_key.get_secret_value().lower() in DEFAULT_SECRETS:
        problems.append(Problem("error", "openai.api_key", "a well-known default secret; set a real one"))
    for p in settings.providers if settings.profile.value == "production" else []:
        if p.api_key.get_secret_value().lower() in DEFAULT_SECRETS:
            problems.append(
                Problem("error", f"providers[{p.name}].api_key", "a well-known default secret; set a real one")
            )
    from ragvigil.ops.faults import startup_problem as fault_problem

    if faults := fault_problem(settings):
        problems.append(Problem("error", "faults.enabled", faults))
    if settings.alerts.enabled and settings.alerts.rules_file is not None:
        from ragvigil.ops.alerts.rules import RuleFileError, load_rule_file

        try:
            load_rule_file(settings.alerts.rules_file)
        except RuleFileError as exc:
            problems.append(Problem("error", str(settings.alerts.rules_file), f"alert rules rejected: {exc}"))
    if settings.canary.enabled and settings.canary.probes_file is not None:
        from ragvigil.ops.canary import CanaryProbesInvalid, load_probes

        try:
            load_probes(settings.canary.probes_file)
        except CanaryProbesInvalid as exc:
            problems.append(Problem("error", str(exc.source), "canary probes rejected: " + "; ".join(exc.problems)))
    return problems


def admin_key_expected(settings: Settings) -> bool | None:
    """Whether the instance will have an active admin key once started, read without changing anything.

    True when the first start makes one (``first_start_admin_key``); else whether the database holds
    one: False when there is no database or schema yet, None when it cannot be asked.
    """
    if settings.first_start_admin_key:
        return True
    from sqlalchemy.exc import SQLAlchemyError

    from ragvigil.storage.schema import schema_problem

    try:
        problem = schema_problem(settings.db_url)
    except SQLAlchemyError:
        return None
    if problem is not None and ("no database" in problem or "no ragvigil schema" in problem):
        return False
    from ragvigil.ops.access import KeyStore
    from ragvigil.storage.db import Database

    db = Database(settings.db_url)
    try:
        return KeyStore(db).has_active_admin()
    except SQLAlchemyError:
        return None
    finally:
        db.dispose()
