"""``ragvigil serve``: the HTTP server, refused when the start check finds a problem."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer
from rich.markup import escape

from ragvigil.cli.common import err, load_settings_or_exit

_settings = load_settings_or_exit


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (loopback unless keys are required)", show_default="RAGVIGIL_HOST, 127.0.0.1"
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on", show_default="RAGVIGIL_PORT, 8000")] = None,
) -> None:
    """Start the HTTP server."""
    import uvicorn

    from ragvigil.api.admission import early_refusal
    from ragvigil.api.http_protocols import http_protocol
    from ragvigil.api.server import create_app
    from ragvigil.api.serving import DrainingServer
    from ragvigil.ops.logging import configure_logging, reset_logging
    from ragvigil.ops.open_files import raise_open_files_limit
    from ragvigil.preflight import admin_key_expected, start_problems
    from ragvigil.storage.schema import start_refusal
    from ragvigil.storage.serving_lock import DataDirServed, ServingLock

    s = _settings()
    configure_logging(s.log_level, s.log_dir, s.log_json, flush_interval=s.log_flush_interval)
    try:
        host, port = host or s.host, port or s.port
        s = s.model_copy(update={"host": host, "port": port})  # the lifespan checks the real bind address
        if refusal := start_refusal(s.db_url, migrate_on_start=s.database.migrate_on_start):
            err.print(f"[red]refusing to start:[/red] {escape(refusal)}")
            raise typer.Exit(2)
        if problems := start_problems(s, admin_key=admin_key_expected(s)):
            for p in problems:
                err.print(f"[red]refusing to start in {s.profile.value}:[/red] {escape(p.source)}: {escape(p.message)}")
            raise typer.Exit(2)
        err.print(
            f"ragvigil {s.profile.value} on http://{host}:{port}  (chat page: POST /api/v1/chat, metrics: /metrics)"
        )
        lock = ServingLock(s.data_dir)  # one server per data dir: its vector files are this process's own
        try:
            lock.acquire()
        except DataDirServed as exc:
            err.print(f"[red]refusing to start:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        raise_open_files_limit()  # a connection per client: past 1,024 of them accept() would fail
        web = create_app(s)
        # loop="asyncio": the same event loop whether or not uvloop happens to be installed (other packages pull it
        # in), so what is tested and measured is what runs
        # http: uvicorn's own protocol, but a request it cannot parse gets ragvigil's JSON error body, and a
        # flood's refusals are answered before the middleware (api/admission.py's EarlyRefusal)
        http = http_protocol(lambda: early_refusal(web))
        config = uvicorn.Config(web, host=host, port=port, log_config=None, access_log=False, loop="asyncio", http=http)
        runtime = lambda: getattr(web.state, "runtime", None)  # noqa: E731
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn re-raises it once it has stopped
            DrainingServer(
                config, s.shutdown_grace_s, runtime, on_stopped=reset_logging, linger_s=s.shutdown_linger_s
            ).run()
        if getattr(runtime(), "restart_requested", None):
            from ragvigil.ops.remediation import RESTART_EXIT_CODE

            err.print(f"ragvigil: restart requested ({runtime().restart_requested}); exiting {RESTART_EXIT_CODE}")
            raise typer.Exit(RESTART_EXIT_CODE)
    finally:
        reset_logging()  # the lines still queued in the log writer
