"""``ragvigil providers``: the provider router of a *running* instance (breakers live in its process)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import httpx
import typer
from rich.table import Table

from ragvigil.cli.common import api_key_or_stored, console, err, load_settings_or_exit

providers_app = typer.Typer(help="Provider breakers of a running instance: list, force.", no_args_is_help=True)
UrlOpt = Annotated[str | None, typer.Option("--url", help="the instance, default http://HOST:PORT from settings")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="a viewer (list) or operator (breaker) key")]


def _call(method: str, path: str, url: str | None, api_key: str | None, body: dict | None = None) -> dict:
    settings = load_settings_or_exit()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    headers = {"Authorization": f"Bearer {api_key_or_stored(api_key, settings)}"}
    try:
        resp = httpx.request(method, base + path, json=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach {base}:[/red] {exc}")
        raise typer.Exit(1) from None
    data = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code >= 400:
        err.print(f"[red]{resp.status_code} {data.get('code', '')}:[/red] {data.get('message', resp.text[:300])}")
        raise typer.Exit(1)
    return data


@providers_app.command("list")
def list_providers(
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the list as JSON")] = False,
) -> None:
    """The providers in the order they are tried, with breaker state, rates and whether the key is bad."""
    rows = _call("GET", "/api/v1/ops/providers", url, api_key)["providers"]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("name", "kind", "model", "breaker", "failure rate", "slow rate", "calls", "key bad", "opened at")
    for r in rows:
        breaker = r["breaker"] + (f" (forced by {r['forced_by']})" if r.get("forced_by") else "")
        table.add_row(
            r["name"], r["kind"], r["model"], breaker, f"{r['failure_rate']:.0%}", f"{r['slow_rate']:.0%}",
            str(r["calls"]), "yes" if r["key_bad"] else "", r["opened_at"] or "",
        )  # fmt: skip
    console.print(table)


@providers_app.command("breaker")
def force_breaker(
    name: Annotated[str, typer.Argument(help="a provider name from `ragvigil providers list`")],
    state: Annotated[str, typer.Argument(help="open | closed | auto")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Force a provider's breaker open or closed, or hand it back to automatic (audited)."""
    if state not in ("open", "closed", "auto"):
        err.print(f"[red]state must be open, closed or auto[/red], not {state!r}")
        raise typer.Exit(2)
    chosen: Literal["open", "closed", "auto"] = state  # type: ignore[assignment]
    out = _call("PUT", f"/api/v1/ops/providers/{name}/breaker", url, api_key, {"state": chosen})
    console.print(f"{name}: breaker {out['before']} → {out['breaker']}")
