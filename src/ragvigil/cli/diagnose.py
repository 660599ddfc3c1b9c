"""``ragvigil diagnose [INCIDENT]``: likely causes of what an instance shows, or of one incident.

Against a running instance (``--url``, else the local one at the configured host and port) it reads
``GET /api/v1/ops/diagnosis`` or ``/api/v1/ops/incidents/{id}/diagnosis`` with ``RAGVIGIL_API_KEY``
(else the admin key stored in the data dir). When the local instance is not running it diagnoses
from the data dir alone: the firing alerts the service filed, the logs, the database and the disk,
and the host's figures (the vector store, embedding and generator checks need the running service).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ragvigil.cli.common import console, err, load_settings_or_exit
from ragvigil.config import Settings

HTTP_TIMEOUT_S = 30.0


def diagnose(
    incident: Annotated[
        str | None, typer.Argument(help="An incident id (a prefix is enough offline); none: the current symptoms")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Base URL of a running instance", show_default="the configured host and port"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RAGVIGIL_API_KEY", help="A viewer key", show_default="<data dir>/admin.key"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diagnosis as JSON")] = False,
    check: Annotated[
        Path | None, typer.Option("--check", help="Only validate this diagnosis rule file (exit 2 when invalid)")
    ] = None,
) -> None:
    """Ranked likely causes, each with its confidence, evidence (signal, value, since when) and runbook."""
    if check is not None:
        _check(check)
        return
    settings = load_settings_or_exit()
    base = url or _local_url(settings)
    result = _remote(base, incident, api_key, settings, explicit=url is not None)
    if result is None:  # the local instance is not running
        err.print(f"[yellow]no instance answers at {base}: diagnosing from the data dir {settings.data_dir}[/yellow]")
        result = _offline(settings, incident)
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        return
    _render(result)


def _check(path: Path) -> None:
    from ragvigil.ops.diagnosis import DiagnosisRuleError, load_diagnosis_file

    try:
        rules = load_diagnosis_file(path)
    except DiagnosisRuleError as exc:
        err.print(f"[red]invalid diagnosis rule file[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"{path}: {len(rules.causes)} causes OK")


def _local_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def _remote(base: str, incident: str | None, key: str | None, settings: Settings, explicit: bool) -> dict | None:
    """The diagnosis from a running instance; None when nothing listens there and no URL was given."""
    import httpx

    from ragvigil.ops.admin_key import read_admin_key

    key = key or read_admin_key(settings.data_dir)
    path = f"/api/v1/ops/incidents/{incident}/diagnosis" if incident else "/api/v1/ops/diagnosis"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(base.rstrip("/") + path, headers=headers, timeout=HTTP_TIMEOUT_S)
    except httpx.ConnectError as exc:
        if not explicit:
            return None
        err.print(f"[red]cannot reach {escape(base)}:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]{escape(base)} did not answer:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if r.status_code != 200:
        try:
            body = r.json()
            message = f"{body.get('code')}: {body.get('message')}"
        except ValueError:
            message = r.text[:300]
        hint = " (set RAGVIGIL_API_KEY or --api-key)" if r.status_code in (401, 403) else ""
        err.print(f"[red]{r.status_code} {escape(message)}[/red]{hint}")
        raise typer.Exit(1)
    return r.json()


def _offline(settings: Settings, incident: str | None) -> dict[str, Any]:
    """A diagnosis from the data dir, without the service: what it filed, the logs, database, disk, host."""
    from ragvigil.ops.alerts.incidents import IncidentNotFound, IncidentStore
    from ragvigil.ops.diagnosis import build_diagnoser
    from ragvigil.ops.diagnosis.symptoms import AlertSymptom, incident_alerts
    from ragvigil.ops.health import HealthChecks
    from ragvigil.storage.db import Database, ping

    root = logging.getLogger("ragvigil")
    if not root.handlers:  # what failed is in the diagnosis' notes; no bare log lines on the terminal
        root.addHandler(logging.NullHandler())
    db = Database(settings.db_url)
    store = IncidentStore(db)
    health = HealthChecks()
    health.add("database", lambda: ping(db.engine))
    health.add("disk", lambda: _check_disk(settings))

    def filed() -> list[AlertSymptom]:
        out: list[AlertSymptom] = []
        for i in store.list(limit=100):
            if i["status"] != "resolved":
                out += incident_alerts(store.get(i["id"]))
        return out

    try:
        diagnoser = build_diagnoser(settings, store, health=health, alert_source=filed)
        incident_id = _match_incident(store, incident) if incident else None
        result = diagnoser.diagnose(incident_id)
        if incident_id is not None:
            result["at_open"] = diagnoser.recorded(store.get(incident_id))
    except IncidentNotFound:
        err.print(f"[red]no incident {escape(str(incident))}[/red]")
        raise typer.Exit(1) from None
    finally:
        health.close()
        db.dispose()
    result["symptoms"]["notes"].append("offline: vector store, embedding and generator checks need the service")
    return result


def _match_incident(store: Any, prefix: str) -> str:
    try:
        matches = [i["id"] for i in store.list(limit=1000) if i["id"].startswith(prefix)]
    except Exception as exc:  # the database may be what is down
        err.print(f"[red]cannot read incidents:[/red] {escape(str(exc).splitlines()[0][:200])}")
        raise typer.Exit(1) from None
    if len(matches) != 1:
        err.print(f"[red]{'no' if not matches else 'more than one'} incident matches {escape(prefix)!r}[/red]")
        raise typer.Exit(1)
    return matches[0]


def _check_disk(settings: Settings) -> None:
    free = shutil.disk_usage(settings.data_dir if settings.data_dir.exists() else settings.data_dir.parent).free
    if free < settings.min_free_disk_mb * 1024 * 1024:
        raise OSError(f"only {free // (1024 * 1024)} MB free under {settings.data_dir}")


def _render(result: dict[str, Any]) -> None:
    title = f"incident {result['incident_id']}" if result.get("incident_id") else "current symptoms"
    console.print(f"[bold]diagnosis of {escape(title)}[/bold] at {result['taken_at']}")
    causes = result["causes"]
    if not causes:
        console.print("no likely cause: no rule's symptoms are present")
    else:
        table = Table("#", "cause", "confidence", "since", "evidence", "actions")
        for n, c in enumerate(causes, 1):
            evidence = "\n".join(
                f"{e['signal']}" + (f" (since {e['since'][:19]})" if e["since"] else "") for e in c["evidence"]
            )
            table.add_row(
                str(n),
                f"{c['cause']}\n{c['summary'].get('en') or c['summary'].get('zh', '')}",
                f"{c['confidence']:.2f}",
                (c["since"] or "")[:19],
                evidence,
                ", ".join(a["name"] for a in c["actions"]),
            )
        console.print(table)
        top = causes[0]
        if top["runbook"]:
            console.print(f"[bold]runbook for {top['cause']}:[/bold]")
            for n, step in enumerate(top["runbook"], 1):
                console.print(f"  {n}. {escape(step)}")
    at_open = result.get("at_open")
    if at_open:
        first = at_open["causes"][0]["cause"] if at_open.get("causes") else "none"
        console.print(f"when it opened ({str(at_open['at'])[:19]}): likely cause {first}")
    for note in result["symptoms"].get("notes", []):
        console.print(f"[dim]note: {escape(note)}[/dim]")
    console.print(f"[dim]confidence = {result['confidence_formula']}[/dim]")
