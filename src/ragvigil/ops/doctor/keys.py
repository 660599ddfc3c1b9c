"""The keys group: an admin key where keys are required, the stored admin key private, no well-known secrets."""

from __future__ import annotations

import stat
from collections.abc import Iterator

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.config import Settings
from ragvigil.ops.access import Role
from ragvigil.ops.admin_key import admin_key_path
from ragvigil.ops.doctor.database import doctor_engine, sqlite_missing
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, skipped, warn
from ragvigil.preflight import DEFAULT_SECRETS, NO_ADMIN_KEY
from ragvigil.storage.models import ApiKey


def check_keys(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    return [_admin_key(settings, options), _key_file(settings), *_secrets(settings)]


def _admin_key(settings: Settings, options: DoctorOptions) -> CheckResult:
    if not settings.auth_required:
        return skipped("keys.admin", "auth_required is off (chat answers loopback callers without a key)")
    if settings.first_start_admin_key and sqlite_missing(settings.db_url) is not None:
        return ok("keys.admin", "none yet: the first start creates one (first_start_admin_key)")
    engine = doctor_engine(settings.db_url, options.timeout_s)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                select(ApiKey.id).where(ApiKey.role == Role.admin.name, ApiKey.revoked_at.is_(None)).limit(1)
            ).first()
    except SQLAlchemyError as exc:
        return skipped("keys.admin", f"keys not read, the database cannot be read ({type(exc).__name__})")
    finally:
        engine.dispose()
    if found is not None:
        return ok("keys.admin", "an active admin key exists")
    if settings.first_start_admin_key:
        return warn("keys.admin", "no active admin key yet", "start ragvigil once: first_start_admin_key makes one")
    return fail("keys.admin", "no active admin key, and auth_required is on", NO_ADMIN_KEY.split(": ", 1)[1])


def _key_file(settings: Settings) -> CheckResult:
    path = admin_key_path(settings.data_dir)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return ok("keys.file", f"no stored admin key at {path}")
    except OSError as exc:
        return fail("keys.file", f"cannot read {path}: {exc}", f"chown {path} to ragvigil's user")
    fix = f"chmod 600 {path}"
    if mode & stat.S_IROTH:
        return fail("keys.file", f"{path} is world-readable (mode {stat.S_IMODE(mode):o})", fix)
    if mode & (stat.S_IRGRP | stat.S_IWGRP | stat.S_IWOTH):
        return warn("keys.file", f"{path} is open to its group (mode {stat.S_IMODE(mode):o})", fix)
    return ok("keys.file", f"{path} readable by its owner only")


def _secret_settings(settings: Settings) -> Iterator[tuple[str, SecretStr | None, bool]]:
    """(setting, value, whether the start check already refuses it in production)."""
    yield "openai.api_key", settings.openai.api_key, True
    for p in settings.providers:
        yield f"providers[{p.name}].api_key", p.api_key, True
    for c in settings.alerts.channels:
        yield f"alerts.channels[{c.name}].secret", c.secret, False
        yield f"alerts.channels[{c.name}].smtp_password", c.smtp_password, False


def _secrets(settings: Settings) -> list[CheckResult]:
    production = settings.profile.value == "production"
    rows = []
    for name, value, refused_at_start in _secret_settings(settings):
        if value is None or value.get_secret_value().strip().lower() not in DEFAULT_SECRETS:
            continue
        if production and refused_at_start:
            continue  # the configuration group reports it with the start's own refusal
        row = fail if production else warn
        rows.append(row(f"keys.secret[{name}]", f"{name} is a well-known default value", f"set a real {name}"))
    return rows or [ok("keys.secrets", "no secret is set to a well-known default")]
