"""`ragvigil remediation check FILE | policies`: validate a policy file before it is deployed, list the policies in force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ragvigil.cli.common import console, err, load_settings_or_exit

remediation_app = typer.Typer(
    help="Remediation policies: check a file, list the policies in force.", no_args_is_help=True
)


@remediation_app.command("check")
def check(path: Annotated[Path, typer.Argument(help="a remediation policy file (YAML)")]) -> None:
    """Validate a policy file: every problem with its policy and field; exits 2 if there is any."""
    from ragvigil.ops.remediation.policies import PolicyFileError, load_policy_file

    try:
        policies = load_policy_file(path)
    except PolicyFileError as exc:
        err.print(f"[red]{escape(str(path))}: {len(exc.problems)} problem(s)[/red]")
        for problem in exc.problems:
            err.print(f"  {escape(problem)}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"{path}: {len(policies.policies)} policies, valid", soft_wrap=True)  # one line, whatever the width


@remediation_app.command("policies")
def policies(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """The policies in force (RAGVIGIL_REMEDIATION__POLICIES_FILE, else the defaults)."""
    from ragvigil.ops.remediation.policies import default_policies, load_policy_file

    s = load_settings_or_exit()
    pack = default_policies() if s.remediation.policies_file is None else load_policy_file(s.remediation.policies_file)
    if as_json:
        print(json.dumps([p.as_dict() for p in pack.policies]))
        return
    table = Table("policy", "match", "action", "cooldown", "max/h", "verify")
    for p in pack.policies:
        spec = p.spec
        match = spec.match.alert or f"cause={spec.match.cause}"
        if spec.match.labels:
            match += " " + ",".join(f"{k}={v}" for k, v in spec.match.labels.items())
        v = spec.verify
        bounds = " ".join(
            x
            for x in (f"< {v.below:g}" if v.below is not None else "", f"> {v.above:g}" if v.above is not None else "")
            if x
        )
        verify = f"{v.window:g}s: {(v.signal or 'alert resolves').strip()} {bounds}".strip()
        table.add_row(spec.name, match, spec.action, f"{spec.cooldown:g}s", str(spec.max_per_hour), verify)
    console.print(table)
