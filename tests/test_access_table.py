"""The README's Access table is the access rule: every route of the app is in it, and every cell holds.

Requests carry no body, so a route that lets the caller in answers 404/405/422 (or 200) and does
nothing; one that does not answers 401 (no or bad key) or 403 (role too low).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from tests.conftest import LOOPBACK_CLIENT, ROOT, auth, make_settings

PROFILES = ("development", "staging", "production")
ROLES = ("client", "viewer", "operator", "admin")
REMOTE_CLIENT = ("192.0.2.7", 40000)  # TEST-NET-1: never loopback
PARAMS = {"kb": "default"}  # every other path parameter gets an id that does not exist


def access_table() -> dict[tuple[str, str], dict[str, str]]:
    """``(method, path) → {profile: cell}`` from the README's Access section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Access\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    table: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        routes = re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`]*)`", cells[0])
        assert routes and len(cells) == 1 + len(PROFILES), row
        for route in routes:
            assert route not in table, f"{route} is in the table twice"
            table[route] = dict(zip(PROFILES, cells[1:], strict=True))
    return table


TABLE = access_table()


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every route the app serves: its OpenAPI operations and the routes kept out of the schema."""
    out = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    out |= {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods if m != "HEAD"}
    return out


@pytest.fixture(scope="module")
def instances(sample_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    """One running app per profile, with a key of every role."""
    out, runtimes = {}, []
    for profile in PROFILES:
        d = tmp_path_factory.mktemp(f"access-{profile}") / "data"
        shutil.copytree(sample_data_dir, d)
        rt = Runtime(make_settings(d, profile=profile))
        runtimes.append(rt)
        keys = {role: rt.keys.create(f"{role}-key", Role[role])[1] for role in ROLES}
        out[profile] = (create_app(runtime=rt), keys)
    yield out
    for rt in runtimes:
        rt.close()


def test_every_route_of_the_app_is_in_the_table(tmp_path: Path) -> None:
    served = app_routes(create_app(make_settings(tmp_path / "d")))
    assert set(TABLE) - served == set(), "the README names routes the app does not serve"
    assert served - set(TABLE) == set(), "routes missing from the README's Access table"


def _path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "nope"), template)


def _let_in(r) -> bool:  # type: ignore[no-untyped-def]
    assert r.status_code not in (500, 502), r.text
    return r.status_code not in (401, 403)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_table_holds(instances, profile: str) -> None:  # type: ignore[no-untyped-def]
    app, keys = instances[profile]
    checked = 0
    with (
        TestClient(app, client=LOOPBACK_CLIENT) as local,
        TestClient(app, client=REMOTE_CLIENT) as remote,
    ):
        for (method, template), cells in TABLE.items():
            cell, path = cells[profile], _path(template)
            where = f"{profile}: {method} {template} is {cell!r}"
            if cell == "not served":
                assert local.request(method, path, headers=auth(keys["admin"])).status_code == 404, where
                continue
            if cell == "open":
                assert _let_in(remote.request(method, path)), where
                continue
            if cell == "open on loopback":
                assert _let_in(local.request(method, path)), where
                assert remote.request(method, path).status_code == 401, where
                cell = cells["staging"]  # a key, or a caller elsewhere, needs the keyed role
            assert cell in ROLES, where
            for client in (local, remote):
                bad = client.request(method, path, headers=auth("rv_not-a-key"))
                assert bad.status_code == 401 and bad.json()["code"] == "unauthorized", where
            if cells[profile] != "open on loopback":
                assert local.request(method, path).status_code == 401, where
            for role in ROLES:
                r = local.request(method, path, headers=auth(keys[role]))
                if ROLES.index(role) < ROLES.index(cell):
                    assert r.status_code == 403 and r.json()["code"] == "forbidden", (where, role)
                else:
                    assert _let_in(r), (where, role, r.text)
            checked += 1
    assert checked >= 20


def test_staging_api_docs_need_a_key(instances) -> None:  # type: ignore[no-untyped-def]
    app, keys = instances["staging"]
    with TestClient(app, client=LOOPBACK_CLIENT) as c:
        for path in ("/openapi.json", "/docs"):
            assert c.get(path).status_code == 401
        schema = c.get("/openapi.json", headers=auth(keys["viewer"]))
        assert schema.status_code == 200 and "/api/v1/chat" in schema.json()["paths"]
        assert "swagger" in c.get("/docs", headers=auth(keys["viewer"])).text.lower()
