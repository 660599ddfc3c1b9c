"""Every problem of the configuration, each with where it came from, instead of the first traceback.

Loading settings can fail in ways pydantic reports badly or not at all: a ``RAGVIGIL_*`` variable
holding broken JSON (pydantic-settings raises one ``SettingsError`` naming only the top field), a
TOML file that does not parse (a bare ``TOMLDecodeError``), a ``RAGVIGIL_CONFIG_FILE`` that does not
exist (silently ignored, so the operator's settings are not the ones applied) and a misspelt
variable name (silently ignored). ``check_settings`` looks for these first, then validates, and
returns every problem it found; the CLI prints them and exits 2 (``config check``, ``serve``...).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from ragvigil.config import CONFIG_FILE_ENV, ENV_PREFIX, Settings, config_file, describe_error, field_types

# RAGVIGIL_* names that are not settings: the config file itself, and the test suite's own knobs.
_NOT_SETTINGS = (CONFIG_FILE_ENV, f"{ENV_PREFIX}TEST_")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration; ``source`` is the variable, file or "settings" at fault."""

    level: Literal["error", "warning"]
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.source}: {self.message}"


@dataclass(frozen=True)
class _EnvTarget:
    path: tuple[str, ...]
    complex: bool  # pydantic-settings decodes the value as JSON
    open_ended: bool  # a dict: RAGVIGIL_NAME__<any key> is valid too


def check_settings(**overrides: Any) -> tuple[Settings | None, list[Problem]]:
    """The settings (None if they cannot be built) and every problem found, errors and warnings.

    Reads ``os.environ``, as the settings do; ``overrides`` are passed on to ``Settings``.
    """
    environ = os.environ
    targets = env_targets()
    problems = _env_problems(environ, targets) + _file_problems(environ)
    if any(p.level == "error" for p in problems):
        return None, problems  # building the settings would only fail on the first of these
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        toml = _toml_data(environ)
        for err in exc.errors():
            problems.append(Problem("error", _source(err["loc"], environ, toml, overrides), describe_error(err)))
        return None, problems
    except (SettingsError, ValueError, OSError) as exc:  # what the checks above did not foresee
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        problems.append(Problem("error", "settings", f"{exc}{cause}"))
        return None, problems
    return settings, problems


def env_targets(model: type[BaseModel] = Settings) -> dict[str, _EnvTarget]:
    """Every valid ``RAGVIGIL_*`` name (upper case) and the setting it sets."""
    out: dict[str, _EnvTarget] = {}

    def walk(cls: type[BaseModel], prefix: str, path: tuple[str, ...]) -> None:
        for name, field in cls.model_fields.items():
            env, here = f"{prefix}{name.upper()}", (*path, name)
            sub = next((t for t in field_types(field.annotation) if _is_model(t)), None)  # env can't index lists
            out[env] = _EnvTarget(here, sub is not None or _is_container(field.annotation), _is_dict(field.annotation))
            if sub is not None:
                walk(sub, f"{env}__", here)

    walk(model, ENV_PREFIX, ())
    return out


def _env_problems(environ: Mapping[str, str], targets: dict[str, _EnvTarget]) -> list[Problem]:
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_NOT_SETTINGS):
            continue
        target = targets.get(upper) or _open_ended(upper, targets)
        if target is None and _in_a_section(upper, targets):
            continue  # RAGVIGIL_OPENAI__MODLE: validation reports it (an unknown key of a section)
        if target is None:
            close = difflib.get_close_matches(upper, targets, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(Problem("warning", name, f"not a ragvigil setting, ignored{hint}"))
        elif target.complex and environ[name].strip():
            try:
                json.loads(environ[name])
            except json.JSONDecodeError as exc:
                problems.append(Problem("error", name, f"not valid JSON: {exc}"))
    return problems


def _in_a_section(name: str, targets: dict[str, _EnvTarget]) -> bool:
    parent = name.rpartition("__")[0]
    return any(t.startswith(parent + "__") for t in targets) if parent else False


def _open_ended(name: str, targets: dict[str, _EnvTarget]) -> _EnvTarget | None:
    head = name.rsplit("__", 1)[0]
    while True:
        target = targets.get(head)
        if target is not None and target.open_ended:
            return target
        if "__" not in head:
            return None
        head = head.rsplit("__", 1)[0]


def _file_problems(environ: Mapping[str, str]) -> list[Problem]:
    path, explicit = config_file(environ)
    if not path.exists():
        return [Problem("error", CONFIG_FILE_ENV, f"{path} does not exist")] if explicit else []
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        return [Problem("error", str(path), f"not valid TOML: {exc}")]
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem("error", str(path), f"cannot be read: {exc}")]
    return []


def _toml_data(environ: Mapping[str, str]) -> dict[str, Any]:
    path, _ = config_file(environ)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _source(loc: tuple[int | str, ...], environ: Mapping[str, str], toml: dict[str, Any], overrides: dict) -> str:
    """Where the value at ``loc`` came from, highest precedence first (as pydantic-settings reads them)."""
    keys = [str(p) for p in loc if isinstance(p, str)]
    if not keys:
        return "settings"
    if keys[0] in overrides:
        return "argument"
    upper = {n.upper(): n for n in environ}
    for depth in range(len(keys), 0, -1):
        name = ENV_PREFIX + "__".join(keys[:depth]).upper()
        if name in upper:
            return upper[name]
    if keys[0] in toml:
        return str(config_file(environ)[0])
    dotenv = Path(".env")
    if dotenv.is_file() and any(k.upper().startswith(ENV_PREFIX + keys[0].upper()) for k in dotenv_values(dotenv)):
        return ".env"
    return "settings"


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _is_container(annotation: Any) -> bool:
    return any(typing.get_origin(t) in (list, dict, set, tuple) or t in (list, dict) for t in field_types(annotation))


def _is_dict(annotation: Any) -> bool:
    return any(typing.get_origin(t) is dict or t is dict for t in field_types(annotation))
