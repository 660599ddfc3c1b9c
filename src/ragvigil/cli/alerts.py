"""``ragvigil alerts``: check rule files, list the default pack, export for Prometheus and Alertmanager."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ragvigil.cli.common import api_key_or_stored, console, err, load_settings_or_exit
from ragvigil.ops.alerts.rules import RuleFileError, RuleSet, default_rules, load_rule_file

alerts_app = typer.Typer(help="Alert rules: check, export for Prometheus/Alertmanager.", no_args_is_help=True)


def _rules(path: Path | None) -> RuleSet:
    """The given rule file, else the configured one, else the default pack; exit 2 on a bad file."""
    if path is None:
        path = load_settings_or_exit().alerts.rules_file
    try:
        return default_rules() if path is None else load_rule_file(path)
    except RuleFileError as exc:
        err.print(f"[red]invalid rule file[/red] {exc}")
        raise typer.Exit(2) from None


@alerts_app.command("check")
def check(rule_file: Annotated[Path, typer.Argument(help="a Prometheus rule file")]) -> None:
    """Validate a rule file: every problem with its rule and field; exit 2 when there is one."""
    rules = _rules(rule_file)
    console.print(f"{rule_file}: {len(rules.rules)} rules OK")


@alerts_app.command("rules")
def list_rules(
    rule_file: Annotated[
        Path | None, typer.Option("--rules", help="A rule file to list", show_default="the configured rules")
    ] = None,
) -> None:
    """The rules in force: name, severity, for, expression."""
    from rich.table import Table

    table = Table("rule", "severity", "for", "expr", "no_data")
    for r in _rules(rule_file).rules:
        table.add_row(r.name, r.severity, f"{r.spec.for_:g}s", " ".join(r.spec.expr.split()), r.spec.no_data)
    console.print(table)


class ExportFormat(StrEnum):
    prometheus = "prometheus"
    alertmanager = "alertmanager"


WEBHOOK_PATH = "/api/v1/ops/alerts/webhook"


@alerts_app.command("export")
def export(
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="prometheus: a rule file; alertmanager: a config that reports to ragvigil"),
    ] = ExportFormat.prometheus,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write", show_default="stdout")] = None,
    rule_file: Annotated[
        Path | None, typer.Option("--rules", help="The rule file to export", show_default="the configured rules")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help=f"ragvigil's base URL as Alertmanager reaches it, e.g. http://ragvigil:8000 (webhook: {WEBHOOK_PATH})",
            show_default="the alerts.external_url setting",
        ),
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="The full webhook URL, when it is not --url + the webhook path")
    ] = None,
    job: Annotated[str, typer.Option(help="ragvigil's scrape job name in Prometheus (prometheus format)")] = "ragvigil",
    api_key: Annotated[
        str | None,
        typer.Option(help="API key (operator role) Alertmanager sends", show_default="<data dir>/admin.key"),
    ] = None,
) -> None:
    """Write the rules as a Prometheus rule file, or an Alertmanager config reporting to ragvigil."""
    from ragvigil.ops.alerts.export import to_alertmanager, to_prometheus

    settings = load_settings_or_exit()
    if fmt is ExportFormat.prometheus:
        text = to_prometheus(_rules(rule_file), settings.alerts.eval_interval, job)
    else:
        webhook = _webhook_url(webhook_url, url or settings.alerts.external_url)
        text = to_alertmanager(webhook, api_key_or_stored(api_key, settings))
    if output is None:
        print(text, end="")
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


def _webhook_url(webhook_url: str | None, base: str) -> str:
    """Where Alertmanager posts: only the operator knows how it reaches ragvigil, so it is never guessed."""
    url = webhook_url or (base.rstrip("/") + WEBHOOK_PATH if base else "")
    if not url:
        err.print(
            "[red]where does Alertmanager reach ragvigil?[/red] give --url http://HOST:PORT "
            "(or set alerts.external_url, or give --webhook-url)"
        )
        raise typer.Exit(2)
    if not url.startswith(("http://", "https://")):
        err.print(f"[red]not an http(s) URL:[/red] {url}")
        raise typer.Exit(2)
    return url


def _db():  # type: ignore[no-untyped-def]
    from ragvigil.storage.db import Database, migrate

    db = Database(load_settings_or_exit().db_url)
    migrate(db.engine)
    return db


def _print_json(data: object) -> None:
    import json

    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@alerts_app.command("list")
def list_active(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Firing alerts of the open incidents (what the running service recorded)."""
    from rich.table import Table

    from ragvigil.ops.alerts.incidents import IncidentStore

    store = IncidentStore(_db())
    rows = []
    for incident in store.list():
        if incident["status"] == "resolved":
            continue
        for a in store.get(incident["id"])["alerts"]:
            if a["state"] == "firing":
                rows.append({"incident": incident["id"], "status": incident["status"], **a})
    if as_json:
        _print_json(rows)
        return
    table = Table("incident", "status", "severity", "alert", "labels", "since")
    for r in rows:
        labels = ", ".join(f"{k}={v}" for k, v in r["labels"].items() if k not in ("alertname", "severity"))
        table.add_row(r["incident"][:8], r["status"], r["severity"], r["alertname"], labels, str(r["starts_at"])[:19])
    console.print(table if rows else "no firing alerts")


@alerts_app.command("ack")
def ack(
    incident_id: Annotated[str, typer.Argument(help="incident id (from `ragvigil alerts list`; a prefix is enough)")],
    comment: Annotated[str, typer.Option(help="what you are doing about it")] = "",
    who: Annotated[str, typer.Option(help="your name, for the timeline and the audit log")] = "cli",
) -> None:
    """Acknowledge an incident: stops its escalation."""
    from ragvigil.ops.access import AuditLog
    from ragvigil.ops.alerts.incidents import IncidentNotFound, IncidentStore

    db = _db()
    store = IncidentStore(db)
    matches = [i["id"] for i in store.list(limit=1000) if i["id"].startswith(incident_id)]
    if len(matches) != 1:
        err.print(f"[red]{'no' if not matches else 'more than one'} incident matches {incident_id!r}[/red]")
        raise typer.Exit(1)
    try:
        out = store.acknowledge(matches[0], who, comment)
    except IncidentNotFound:
        raise typer.Exit(1) from None
    AuditLog(db).record(who, "incident.ack", "ok", matches[0], "cli")
    console.print(f"incident {out['id']} is {out['status']} by {out['acknowledged_by']}")


@alerts_app.command("silence")
def silence(
    matchers: Annotated[list[str] | None, typer.Argument(help='e.g. alertname="HighCPU" severity=~"P3"')] = None,
    duration: Annotated[str, typer.Option("--for", help="how long, e.g. 2h")] = "1h",
    comment: Annotated[str, typer.Option(help="why (required with matchers)")] = "",
    who: Annotated[str, typer.Option(help="your name")] = "cli",
    expire: Annotated[str | None, typer.Option(help="end this silence now (its id)")] = None,
) -> None:
    """Create a silence, list the active ones (no arguments), or end one (--expire ID)."""

    from ragvigil.ops.access import AuditLog
    from ragvigil.ops.alerts.rules import parse_duration
    from ragvigil.ops.alerts.silences import SilenceStore, parse_matcher, silence_window

    db = _db()
    store = SilenceStore(db)
    if expire:
        out = store.expire(expire)
        if out is None:
            err.print(f"[red]no silence {expire}[/red]")
            raise typer.Exit(1)
        AuditLog(db).record(who, "silence.expire", "ok", expire, "cli")
        console.print(f"silence {expire} expired")
        return
    if not matchers:
        for s in store.list():
            m = " ".join(f'{x["name"]}{x["op"]}"{x["value"]}"' for x in s["matchers"])
            console.print(
                f"{s['id']}  {s['state']}  until {str(s['ends_at'])[:19]}  {m}  — {s['comment']} ({s['created_by']})"
            )
        return
    if not comment:
        err.print("[red]--comment is required: say why the alerts are muted[/red]")
        raise typer.Exit(2)
    try:
        parsed = [parse_matcher(m) for m in matchers]
        start, end = silence_window(None, None, parse_duration(duration))
        out = store.create(parsed, start, end, who, comment)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    AuditLog(db).record(who, "silence.create", "ok", out["id"], "cli", {"matchers": [str(m) for m in parsed]})
    console.print(f"silence {out['id']} until {out['ends_at']:%Y-%m-%d %H:%M:%S} UTC")


@alerts_app.command("history")
def history(
    since: Annotated[str, typer.Option(help="How far back, e.g. 24h, 7d")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Incidents opened in the window, each with its timeline."""
    from datetime import UTC, datetime, timedelta

    from ragvigil.ops.alerts.incidents import IncidentStore
    from ragvigil.ops.alerts.rules import parse_duration

    try:
        cutoff = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
    except ValueError as exc:
        err.print(f"[red]--since: {exc}[/red]")
        raise typer.Exit(2) from None
    store = IncidentStore(_db())
    incidents = [store.get(i["id"]) for i in store.list(limit=1000) if i["opened_at"] >= cutoff]
    if as_json:
        _print_json(incidents)
        return
    for i in incidents:
        console.print(f"[bold]{i['id'][:8]}[/bold] {i['severity']} {i['status']}  {i['title']}")
        for e in i["timeline"]:
            d = e["detail"]
            what = d.get("alertname") or d.get("channel") or d.get("to") or d.get("likely_cause") or ""
            console.print(f"    {str(e['at'])[:19]}  {e['kind']:<20} {what} {e['actor'] or ''}")
    if not incidents:
        console.print(f"no incidents since {cutoff:%Y-%m-%d %H:%M} UTC")


@alerts_app.command("test-channel")
def test_channel(
    name: Annotated[str, typer.Argument(help="A channel name from the alerts.channels setting")],
) -> None:
    """Send a test notification through one configured channel; exit 1 when it fails."""
    from ragvigil.ops.alerts.channels import build_channel, test_notification
    from ragvigil.ops.alerts.notifier import Notifier

    settings = load_settings_or_exit()
    channels = {c.name: c for c in settings.alerts.channels}
    if name not in channels:
        err.print(f"[red]no channel {name!r}[/red]; configured: {', '.join(sorted(channels)) or 'none'}")
        raise typer.Exit(2)
    result = Notifier([build_channel(channels[name])]).deliver(test_notification(), name)[0]
    if not result.ok:
        err.print(f"[red]{name}: failed after {result.attempts} attempt(s):[/red] {result.error}")
        raise typer.Exit(1)
    console.print(f"{name}: delivered ({result.attempts} attempt(s))")


@alerts_app.command("backtest")
def backtest_cmd(
    rule_file: Annotated[Path, typer.Argument(help="the rule file to try")],
    since: Annotated[str, typer.Option(help="how far back, e.g. 24h")] = "24h",
    step: Annotated[
        str, typer.Option(help="Evaluation step, e.g. 15s", show_default="the alerts.record_interval setting")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Replay the recorded signals through RULE_FILE: when each rule would have fired and resolved."""
    import time
    from datetime import UTC, datetime

    from rich.table import Table

    from ragvigil.ops.alerts.recording import backtest, load_recording
    from ragvigil.ops.alerts.rules import parse_duration

    rules = _rules(rule_file)
    settings = load_settings_or_exit()
    try:
        window = parse_duration(since)
        every = parse_duration(step) if step else settings.alerts.record_interval or 15.0
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    until = time.time()
    start = until - window
    history = load_recording(settings.signal_dir, start, until, rules.metric_names())
    if history.last_sample_at is None:
        err.print(f"[yellow]no recorded signals in {settings.signal_dir} for the last {since}[/yellow]")
        raise typer.Exit(1)
    episodes = backtest(rules, history, start, until, every)

    def when(ts: float | None) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "—"

    if as_json:
        _print_json([e.__dict__ for e in episodes])
        return
    table = Table("rule", "severity", "labels", "pending", "fired", "resolved")
    for e in episodes:
        labels = ", ".join(f"{k}={v}" for k, v in e.labels.items() if k not in ("alertname", "severity"))
        table.add_row(e.rule, e.severity, labels, when(e.pending_at), when(e.fired_at), when(e.resolved_at))
    console.print(table)
    fired = sum(1 for e in episodes if e.fired_at)
    console.print(f"{len(rules.rules)} rules over {since} ({history.series_count} series): {fired} would have fired")


@alerts_app.command("deliveries")
def deliveries(
    channel: Annotated[str | None, typer.Option(help="Only this channel", show_default="all")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """The delivery log: each notification, channel, outcome, attempts and error."""
    from rich.table import Table

    from ragvigil.ops.alerts.notifier import Notifier

    rows = Notifier([], _db()).deliveries(limit, channel)
    if as_json:
        _print_json(rows)
        return
    table = Table("at", "channel", "status", "outcome", "attempts", "alerts", "error")
    for d in rows:
        table.add_row(
            str(d["at"])[:19],
            str(d["channel"]),
            str(d["status"]),
            str(d["outcome"]),
            str(d["attempts"]),
            str(d["alerts"]),
            str(d["error"] or "")[:80],
        )
    console.print(table if rows else "no deliveries yet")
