"""API keys, roles and the audit trail, with auth on (the staging/production behaviour)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.ops.access import Role
from tests.conftest import admin_key, auth, local_client, make_settings

ROLES = ("client", "viewer", "operator", "admin")

# route → least role; None means open (probes and /metrics with open_probes)
MATRIX: list[tuple[str, str, dict, str | None]] = [
    ("POST", "/api/v1/chat", {"json": {"message": "How do I export notes?"}}, "client"),
    ("POST", "/api/v1/chat/stream", {"json": {"message": "How do I export notes?"}}, "client"),
    ("POST", "/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "hi"}]}}, "client"),
    ("GET", "/v1/models", {}, "client"),
    ("GET", "/api/v1/kb", {}, "viewer"),
    ("GET", "/api/v1/kb/default/documents", {}, "viewer"),
    ("GET", "/api/v1/kb/default/search?q=export", {}, "viewer"),
    ("GET", "/api/v1/system/info", {}, "viewer"),
    (
        "POST",
        "/api/v1/kb/default/documents",
        {"files": {"file": ("n.md", b"# N\nnew text", "text/markdown")}},
        "operator",
    ),
    ("DELETE", "/api/v1/kb/default/documents/nope", {}, "admin"),
    ("GET", "/api/v1/ops/audit", {}, "admin"),
    ("GET", "/api/v1/ops/alerts", {}, "viewer"),
    ("GET", "/api/v1/ops/alerts/rules", {}, "viewer"),
    ("POST", "/api/v1/ops/alerts/reload", {}, "operator"),
    ("GET", "/api/v1/ops/incidents", {}, "viewer"),
    ("GET", "/api/v1/ops/instrumentation", {}, "viewer"),
    ("PUT", "/api/v1/ops/instrumentation", {"json": {"enabled": True}}, "operator"),
    ("GET", "/api/v1/ops/silences", {}, "viewer"),
    (
        "POST",
        "/api/v1/ops/silences",
        {"json": {"matchers": ['severity="P3"'], "duration": "1h", "comment": "c"}},
        "operator",
    ),
    ("DELETE", "/api/v1/ops/silences/nope", {}, "operator"),
    ("POST", "/api/v1/ops/incidents/nope/ack", {}, "operator"),
    ("GET", "/api/v1/ops/alerts/deliveries", {}, "viewer"),
    ("POST", "/api/v1/ops/alerts/channels/nope/test", {}, "operator"),
    ("POST", "/api/v1/ops/alerts/webhook", {"json": {"groupKey": "g", "status": "firing", "alerts": []}}, "operator"),
    ("GET", "/health/live", {}, None),
    ("GET", "/health/ready", {}, None),
    ("GET", "/health", {}, None),
    ("GET", "/metrics", {}, None),
]


@pytest.fixture
def secured(sample_data_dir: Path, tmp_path: Path) -> Iterator[tuple[Runtime, TestClient, dict[str, str]]]:
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, profile="staging"))
    keys = {role: rt.keys.create(f"{role}-key", Role[role])[1] for role in ROLES}
    with TestClient(create_app(runtime=rt)) as c:
        yield rt, c, keys
    rt.close()


@pytest.mark.parametrize(("method", "path", "kwargs", "least"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_role_matrix(secured, method: str, path: str, kwargs: dict, least: str | None) -> None:  # type: ignore[no-untyped-def]
    _, c, keys = secured
    anonymous = c.request(method, path, **kwargs)
    if least is None:
        assert anonymous.status_code in (200, 503), anonymous.text
        return
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
    bad = c.request(method, path, headers={"Authorization": "Bearer rv_not-a-key"}, **kwargs)
    assert bad.status_code == 401
    for role in ROLES:
        r = c.request(method, path, headers={"Authorization": f"Bearer {keys[role]}"}, **kwargs)
        if ROLES.index(role) < ROLES.index(least):
            assert r.status_code == 403 and r.json()["code"] == "forbidden", (role, r.text)
        else:
            assert r.status_code not in (401, 403), (role, r.text)


def test_x_api_key_header_and_revocation(secured) -> None:  # type: ignore[no-untyped-def]
    rt, c, keys = secured
    assert c.get("/api/v1/kb", headers={"X-API-Key": keys["viewer"]}).status_code == 200
    viewer = next(k for k in rt.keys.list() if k.name == "viewer-key")
    assert viewer.last_used_at is not None
    rt.keys.revoke(viewer.prefix)
    assert c.get("/api/v1/kb", headers={"X-API-Key": keys["viewer"]}).status_code == 401


def test_keys_are_stored_hashed(secured) -> None:  # type: ignore[no-untyped-def]
    rt, _, keys = secured
    stored = {k.key_hash for k in rt.keys.list()}
    assert not any(plain in stored for plain in keys.values())
    assert all(len(h) == 64 for h in stored)


def test_operator_and_admin_actions_are_audited(secured) -> None:  # type: ignore[no-untyped-def]
    _, c, keys = secured

    def as_(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[role]}"}

    up = c.post(
        "/api/v1/kb/default/documents",
        files={"file": ("a.md", b"# A\nAudit me.", "text/markdown")},
        headers=as_("operator"),
    )
    doc_id = up.json()[0]["document_id"]
    assert c.delete(f"/api/v1/kb/default/documents/{doc_id}", headers=as_("operator")).status_code == 403
    assert c.delete(f"/api/v1/kb/default/documents/{doc_id}", headers=as_("admin")).status_code == 204
    trail = c.get("/api/v1/ops/audit", headers=as_("admin")).json()
    got = [(e["actor"], e["action"], e["result"]) for e in trail]
    assert got[:3] == [
        ("admin-key", "document.delete", "ok"),
        ("operator-key", "DELETE /api/v1/kb/{kb}/documents/{doc_id}", "denied"),
        ("operator-key", "document.upload", "ok"),
    ]
    assert trail[0]["source"] == "testclient" and trail[0]["target"] == f"default/{doc_id}"


def test_development_opens_chat_and_knowledge_base_to_loopback_only(anon_client: TestClient) -> None:
    assert anon_client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
    assert anon_client.get("/api/v1/kb/default/documents").status_code == 200
    up = anon_client.post(
        "/api/v1/kb/default/documents", files={"file": ("n.md", b"# N\nopen upload", "text/markdown")}
    )
    assert up.status_code == 201, up.text
    doc_id = up.json()[0]["document_id"]
    # ops routes and deletions need a key in development too
    for method, path in [
        ("DELETE", f"/api/v1/kb/default/documents/{doc_id}"),
        ("GET", "/api/v1/ops/audit"),
        ("GET", "/api/v1/ops/incidents"),
        ("PUT", "/api/v1/ops/instrumentation"),
        ("DELETE", "/api/v1/ops/silences/nope"),
    ]:
        r = anon_client.request(method, path, json={"enabled": False} if method == "PUT" else None)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (method, path, r.text)
        assert "admin.key" in r.json()["message"]
    assert anon_client.get("/api/v1/kb/default/documents").json()  # the document is still there
    trail = anon_client.app.state.runtime.audit.query(action="document.upload")
    assert trail[0].actor == "anonymous" and trail[0].role == "client"


def test_development_needs_a_key_from_another_address(sample_runtime: Runtime) -> None:
    with TestClient(create_app(runtime=sample_runtime), client=("192.0.2.7", 40000)) as remote:
        r = remote.post("/api/v1/chat", json={"message": "hi"})
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert remote.get("/health/live").status_code == 200  # probes stay open
        key = sample_runtime.keys.create("remote-client", Role.client)[1]
        assert remote.post("/api/v1/chat", json={"message": "hi"}, headers=auth(key)).status_code == 200


def test_a_presented_key_is_always_checked_in_development(anon_client: TestClient, sample_runtime: Runtime) -> None:
    bad = anon_client.post("/api/v1/chat", json={"message": "hi"}, headers=auth("rv_not-a-key"))
    assert bad.status_code == 401
    viewer = sample_runtime.keys.create("v", Role.viewer)[1]
    files = {"file": ("v.md", b"# V\nviewer upload", "text/markdown")}
    r = anon_client.post("/api/v1/kb/default/documents", files=files, headers=auth(viewer))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    admin = admin_key(sample_runtime)
    assert anon_client.get("/api/v1/ops/audit", headers=auth(admin)).status_code == 200


def test_first_start_stores_one_admin_key_readable_only_by_its_owner(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path / "d")
    with local_client(create_app(settings)) as c:
        path = settings.data_dir / "admin.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = path.read_text().strip()
        assert key.startswith("rv_") and key in capfd.readouterr().err  # printed once, on stderr
        assert c.get("/api/v1/ops/audit", headers=auth(key)).status_code == 200
    with local_client(create_app(settings)) as c:  # a second start makes no new key and prints none
        assert path.read_text().strip() == key and key not in capfd.readouterr().err
        assert [k.name for k in c.app.state.runtime.keys.list()] == ["first-start admin"]
    logs = settings.log_dir
    assert not logs.exists() or all(key not in f.read_text(errors="replace") for f in logs.rglob("*.log"))


def test_cli_finds_the_stored_admin_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    export = ["alerts", "export", "--format", "alertmanager", "--url", "http://ragvigil:8000"]
    none = runner.invoke(cli_app, export)
    assert none.exit_code == 2 and "--api-key" in none.output
    with local_client(create_app(make_settings(tmp_path / "data"))):
        pass
    key = (tmp_path / "data" / "admin.key").read_text().strip()
    made = runner.invoke(cli_app, export)
    assert made.exit_code == 0 and f"credentials: {key}" in made.stdout


def test_development_refuses_to_serve_open_routes_beyond_loopback(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "p", host="0.0.0.0"))
    with pytest.raises(RuntimeError, match=r"'0\.0\.0\.0' is not loopback"), TestClient(app):
        pass
    keyed = create_app(make_settings(tmp_path / "q", host="0.0.0.0", auth_required=True))
    with local_client(keyed) as c:  # with keys required everywhere it may listen anywhere
        assert c.post("/api/v1/chat", json={"message": "hi"}).status_code == 401


def test_serve_refuses_a_public_bind_in_development(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    refused = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert refused.exit_code == 2 and "not loopback" in refused.output and "RAGVIGIL_AUTH_REQUIRED" in refused.output


def test_production_refuses_to_start_without_an_admin_key(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "p", profile="production"))
    with pytest.raises(RuntimeError, match="no active admin API key"), TestClient(app):
        pass


def test_keys_cli_and_serve_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGVIGIL_PROFILE", "production")
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["serve", "--port", "1"])
    assert refused.exit_code == 2 and "no active admin API key" in refused.output
    made = runner.invoke(cli_app, ["keys", "create", "ops-lead", "--role", "admin"])
    assert made.exit_code == 0 and made.stdout.strip().startswith("rv_")
    listed = runner.invoke(cli_app, ["keys", "list", "--json"])
    assert '"role": "admin"' in listed.stdout and made.stdout.strip() not in listed.stdout
    prefix = made.stdout.strip()[:10]
    assert runner.invoke(cli_app, ["keys", "revoke", prefix]).exit_code == 0
    assert runner.invoke(cli_app, ["keys", "revoke", "rv_nothing"]).exit_code == 1
    trail = runner.invoke(cli_app, ["audit"])
    assert "key.create" in trail.output and "key.revoke" in trail.output
