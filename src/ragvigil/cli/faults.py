"""``ragvigil safe-mode`` and ``ragvigil faults``: the same switches as the API, against a running instance.

Why over HTTP and not on the data dir: safe mode and faults live in the serving process; a command
that changed a file behind its back would not be seen until a restart (and faults are never on disk).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from ragvigil.cli.common import api_key_or_stored, console, err, load_settings_or_exit

safe_mode_app = typer.Typer(
    help="Safe mode: every message answered with the safe response (status, on, off).", no_args_is_help=True
)
faults_app = typer.Typer(
    help="Fault injection for drills (admin; the instance needs faults.enabled).", no_args_is_help=True
)

UrlOpt = Annotated[str | None, typer.Option("--url", help="ragvigil's base URL", show_default="host and port settings")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key", show_default="<data dir>/admin.key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _call(method: str, path: str, url: str | None, api_key: str | None, body: dict | None = None) -> Any:
    """One API call; an error answer or no answer at all is printed and exits 1."""
    settings = load_settings_or_exit()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = (url or f"http://{host}:{settings.port}").rstrip("/")
    key = api_key_or_stored(api_key, settings)
    try:
        r = httpx.request(method, base + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    except httpx.HTTPError as exc:
        err.print(f"[red]no answer from {base}:[/red] {exc}")
        raise typer.Exit(1) from None
    data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code >= 400:
        err.print(f"[red]{r.status_code} {data.get('code', 'error')}:[/red] {data.get('message', r.text[:300])}")
        raise typer.Exit(1)
    return data


def _print(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        console.print(text, highlight=False)


def _safe_text(s: dict) -> str:
    if not s.get("active"):
        return "safe mode: off"
    return f"safe mode: ON since {s.get('since')} by {s.get('by')}: {s.get('reason')}"


@safe_mode_app.command("status")
def safe_mode_status(url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Whether safe mode is on, since when, by whom and why."""
    state = _call("GET", "/api/v1/ops/safe-mode", url, api_key)
    _print(state, as_json, _safe_text(state))


@safe_mode_app.command("on")
def safe_mode_on(
    reason: Annotated[str, typer.Argument(help="why: shown in the status and the audit trail")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer every message with the safe response (operator; audited)."""
    state = _call("PUT", "/api/v1/ops/safe-mode", url, api_key, {"active": True, "reason": reason})
    _print(state, as_json, _safe_text(state))


@safe_mode_app.command("off")
def safe_mode_off(
    reason: Annotated[str, typer.Option("--reason", help="why: kept in the audit trail")] = "left from the CLI",
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back to normal answers (operator; audited)."""
    state = _call("PUT", "/api/v1/ops/safe-mode", url, api_key, {"active": False, "reason": reason})
    _print(state, as_json, _safe_text(state))


def _fault_text(f: dict) -> str:
    params = " ".join(f"{k}={v}" for k, v in f["params"].items())
    return f"{f['id']}  {f['target']:<20} {f['kind']:<9} {f['remaining_s']:>6.1f}s left  {params}".rstrip()


@faults_app.command("inject")
def inject(
    target: Annotated[
        str, typer.Argument(help="provider:<name>, vector_store, embedding, database, latency, cpu, redis, safety")
    ],
    kind: Annotated[str, typer.Argument(help="error, timeout, slow, malformed, refuse or off")],
    duration: Annotated[float, typer.Option("--duration", help="seconds until it ends by itself (1-600)")] = 60.0,
    delay: Annotated[float | None, typer.Option("--delay", help="delay_s of slow/timeout/latency")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="share of calls hit (0-1]")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="cpu: busy threads (1-4)")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a fault; prints its id (clear it with `ragvigil faults clear ID`)."""
    params = {k: v for k, v in {"delay_s": delay, "rate": rate, "threads": threads}.items() if v is not None}
    body = {"target": target, "kind": kind, "duration_s": duration, "params": params}
    fault = _call("POST", "/api/v1/ops/faults", url, api_key, body)
    _print(fault, as_json, _fault_text(fault))


@faults_app.command("list")
def list_faults(url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """The faults active now."""
    data = _call("GET", "/api/v1/ops/faults", url, api_key)
    _print(data, as_json, "\n".join(_fault_text(f) for f in data["faults"]) or "no active fault")


@faults_app.command("clear")
def clear(
    fault_id: Annotated[str | None, typer.Argument(help="the fault's id", show_default="every fault")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End one fault, or all of them."""
    if fault_id is None:
        data = _call("DELETE", "/api/v1/ops/faults", url, api_key)
        _print(data, as_json, f"cleared {len(data['cleared'])} fault(s)")
    else:
        data = _call("DELETE", f"/api/v1/ops/faults/{fault_id}", url, api_key)
        _print(data, as_json, f"cleared {data['id']}")
