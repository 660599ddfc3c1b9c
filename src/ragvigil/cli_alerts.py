"""``ragvigil alerts``: check rule files, list the default pack, export for Prometheus and Alertmanager."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragvigil.cli_common import console, err, load_settings_or_exit
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
    rule_file: Annotated[Path | None, typer.Option("--rules", help="default: the configured rules")] = None,
) -> None:
    """The rules in force: name, severity, for, expression."""
    from rich.table import Table

    table = Table("rule", "severity", "for", "expr", "no_data")
    for r in _rules(rule_file).rules:
        table.add_row(r.name, r.severity, f"{r.spec.for_:g}s", " ".join(r.spec.expr.split()), r.spec.no_data)
    console.print(table)


@alerts_app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="prometheus | alertmanager")] = "prometheus",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file to write (default: stdout)")] = None,
    rule_file: Annotated[Path | None, typer.Option("--rules", help="default: the configured rules")] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="ragvigil's webhook (default: http://HOST:PORT/api/v1/ops/alerts/webhook)")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="API key Alertmanager sends (operator role)")] = None,
) -> None:
    """Write the rules as a Prometheus rule file, or an Alertmanager config reporting to ragvigil."""
    from ragvigil.ops.alerts.export import to_alertmanager, to_prometheus

    if fmt == "prometheus":
        settings = load_settings_or_exit()
        text = to_prometheus(_rules(rule_file), settings.alerts.eval_interval)
    elif fmt == "alertmanager":
        settings = load_settings_or_exit()
        url = webhook_url or f"http://{settings.host}:{settings.port}/api/v1/ops/alerts/webhook"
        text = to_alertmanager(url, api_key)
    else:
        err.print(f"[red]unknown format {fmt!r}[/red]: use prometheus or alertmanager")
        raise typer.Exit(2)
    if output is None:
        print(text, end="")
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
