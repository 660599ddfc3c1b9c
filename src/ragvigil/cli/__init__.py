"""Command line: serve, ingest, search, ask, migrate, config, keys, audit, logs, alerts.

One module per command group (``config``, ``knowledge``, ``serve``, ``keys``, ``logs``, ``alerts``;
shared helpers in ``common``); this module only assembles them into the ``ragvigil`` app, so a
new group is one ``add_typer`` line here.
"""

from __future__ import annotations

import typer

from ragvigil.cli.alerts import alerts_app
from ragvigil.cli.backup import backup_app, restore
from ragvigil.cli.config import config_app, migrate
from ragvigil.cli.diagnose import diagnose
from ragvigil.cli.doctor import doctor
from ragvigil.cli.drill import drill
from ragvigil.cli.faults import faults_app, safe_mode_app
from ragvigil.cli.handoffs import handoffs_app
from ragvigil.cli.keys import audit, keys_app
from ragvigil.cli.knowledge import ask, ingest, kb_app, search
from ragvigil.cli.logs import logs_app
from ragvigil.cli.providers import providers_app
from ragvigil.cli.reindex import reindex
from ragvigil.cli.remediation import remediation_app
from ragvigil.cli.serve import serve

app = typer.Typer(help="ragvigil: a knowledge-base chat service that runs itself.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(logs_app, name="logs")
app.add_typer(keys_app, name="keys")
app.add_typer(alerts_app, name="alerts")
app.add_typer(providers_app, name="providers")
app.add_typer(safe_mode_app, name="safe-mode")
app.add_typer(faults_app, name="faults")
app.add_typer(remediation_app, name="remediation")
app.add_typer(handoffs_app, name="handoffs")
app.add_typer(kb_app, name="kb")
app.add_typer(backup_app, name="backup")
for command in (migrate, ingest, search, ask, serve, audit, diagnose, drill, doctor, reindex, restore):
    app.command()(command)
