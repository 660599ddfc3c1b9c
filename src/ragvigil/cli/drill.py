"""``ragvigil drill``: rehearse a failure against a running instance and print what users saw."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ragvigil.cli.common import api_key_or_stored, console, err, load_settings_or_exit


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}s"


def drill(
    name: Annotated[str, typer.Argument(help="A drill name, or `all`", show_default=False)],
    url: Annotated[
        str | None,
        typer.Option(help="The instance to drill", show_default="http://HOST:PORT of the settings"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RAGVIGIL_API_KEY", help="An admin key", show_default="the stored admin key"),
    ] = None,
    user_key: Annotated[
        str | None,
        typer.Option(
            envvar="RAGVIGIL_DRILL_USER_KEY",
            help="The key the synthetic users chat with",
            show_default="the admin key; none with --anonymous-users",
        ),
    ] = None,
    anonymous_users: Annotated[
        bool, typer.Option("--anonymous-users", help="Users chat without a key (a development instance on loopback)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per drill, one per line")] = False,
    fault_s: Annotated[float, typer.Option(min=1, max=600, help="Seconds of traffic under the fault")] = 20.0,
    users: Annotated[int, typer.Option(min=1, max=64, help="Synthetic users asking at once")] = 4,
    max_requests: Annotated[int, typer.Option(min=1, max=5000, help="Requests at most, per drill")] = 400,
    detect_s: Annotated[
        float,
        typer.Option(min=1, max=600, help="Seconds to wait for the alert after the fault (at least its rule's `for`)"),
    ] = 20.0,
) -> None:
    """Inject a fault, drive bounded traffic, watch detection, remediation and recovery; always roll back.

    Exit 0 when every drill that applies passed, 1 otherwise. The instance needs `faults.enabled`.
    """
    from ragvigil.ops.drills import DRILLS, DrillOptions, InstanceClient, run

    if name != "all" and name not in DRILLS:
        err.print(f"[red]no drill named {name!r}[/red]; known: {', '.join(DRILLS)}, all")
        raise typer.Exit(2)
    settings = load_settings_or_exit()
    base = url or f"http://{settings.host}:{settings.port}"
    admin = api_key_or_stored(api_key, settings)
    client = InstanceClient(base, admin, user_key=None if anonymous_users else (user_key or admin))
    opts = DrillOptions(users=users, fault_s=fault_s, max_requests=max_requests, detect_timeout_s=detect_s)
    results = []
    try:
        for n in DRILLS if name == "all" else [name]:
            r = run(n, client, opts)
            results.append(r)
            if as_json:
                print(json.dumps(r.as_dict(), ensure_ascii=False, default=str), flush=True)
    finally:
        client.close()
    if not as_json:
        table = Table(
            "drill",
            "requests",
            "answered",
            "failed",
            "shed",
            "degraded",
            "lost",
            "MTTD",
            "action",
            "MTTR",
            "steady",
            "result",
        )
        for r in results:
            verdict = (
                f"skipped: {r.skipped}"
                if r.skipped
                else ("[green]passed[/green]" if r.passed else "[red]failed[/red]: " + "; ".join(r.problems))
            )
            table.add_row(
                r.drill,
                str(r.requests),
                str(r.answered),
                str(r.failed),
                str(r.shed_503 + r.rate_limited_429),
                str(r.degraded),
                str(r.lost),
                _s(r.mttd_s),
                _s(r.time_to_action_s),
                _s(r.mttr_s),
                "yes" if r.steady_state_restored else ("—" if r.skipped else "no"),
                verdict,
            )
        console.print(table)
        for r in results:
            if r.backup_s is not None:
                console.print(f"{r.drill}: time to back up {_s(r.backup_s)}, time to verify {_s(r.verify_s)}")
    if any(r.skipped is None and not r.passed for r in results):
        raise typer.Exit(1)
