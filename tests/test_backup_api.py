"""The running instance backs itself up on request (admin, audited, 202 + a job) and the backup-restore drill."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from ragvigil.ops.drills import DRILLS, InstanceClient, run
from tests.conftest import LiveServer, admin_key, auth, local_client


def _wait(c: TestClient, job_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = c.get(f"/api/v1/admin/backups/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"backup job {job_id} still running")


def test_an_admin_asks_for_a_backup_it_runs_in_the_background_verified_and_audited(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    app = create_app(runtime=rt)
    _, operator = rt.keys.create("an operator", Role.operator)
    with local_client(app, admin_key(rt)) as c:
        r = c.post("/api/v1/admin/backups", json={}, headers=auth(operator))
        assert r.status_code == 403 and r.json()["code"]
        r = c.post("/api/v1/admin/backups", json={"encrypt": True})  # no backup.encryption_key
        assert r.status_code == 409 and r.json()["code"] == "backup_not_configured"
        r = c.post("/api/v1/admin/backups", json={})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["id"] and job["status"] in ("queued", "running") and job["verify"] is True
        busy = c.post("/api/v1/admin/backups", json={})
        if busy.status_code == 409:  # the first is still running: one at a time
            assert busy.json()["code"] == "backup_running"
        else:  # it finished already: the second is a job of its own
            assert busy.status_code == 202
            _wait(c, busy.json()["id"])
        done = _wait(c, job["id"])
        assert done["status"] == "done" and done["verified"] is True, done
        assert done["file"].startswith("ragvigil-backup-") and done["backup_s"] >= 0 and done["verify_s"] >= 0
        listing = c.get("/api/v1/admin/backups").json()
        assert any(j["id"] == job["id"] for j in listing["jobs"])
        file = next(f for f in listing["files"] if f["file"] == done["file"])
        assert file["verified_ok"] is True and file["verified_at"]
        assert c.get("/api/v1/admin/backups/nope").status_code == 404
        audit = c.get("/api/v1/ops/audit", params={"limit": 50}).json()
    entries = audit["entries"] if isinstance(audit, dict) else audit
    actions = [(e["action"], e["result"]) for e in entries]
    assert ("backup.create", "ok") in actions and ("backup.create", "refused") in actions


def test_the_backup_restore_drill_backs_up_while_users_chat_and_reports_its_times(sample_runtime: Runtime) -> None:
    assert "backup-restore" in DRILLS
    with LiveServer(create_app(runtime=sample_runtime)) as url:
        client = InstanceClient(url, admin_key(sample_runtime))
        try:
            result = run("backup-restore", client)
        finally:
            client.close()
    assert result.passed, result.problems
    assert result.backup_s is not None and result.verify_s is not None
    assert result.requests >= 1 and result.failed == 0
    assert "verified" in (result.healing or "") and "smoke test" in (result.healing or "")
