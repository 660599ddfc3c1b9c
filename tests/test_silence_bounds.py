"""A silence's window is bounded: absurd durations and far-future dates are a 422, never an overflow."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragvigil.cli import app as cli_app

M = ['severity="P3"']


def test_huge_duration_is_a_validation_error(client: TestClient) -> None:
    r = client.post("/api/v1/ops/silences", json={"matchers": M, "duration": "99999999999999d", "comment": "c"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error" and r.json()["field"] == "duration"


def test_start_at_the_end_of_time_is_a_validation_error(client: TestClient) -> None:
    for body in (
        {"starts_at": "9999-12-31T00:00:00Z", "duration": "2h"},
        {"starts_at": "9999-12-31T23:59:59-05:00", "duration": "1d"},
        {"starts_at": "9999-12-31T00:00:00", "ends_at": "9999-12-31T23:59:59"},
    ):
        r = client.post("/api/v1/ops/silences", json={"matchers": M, "comment": "c", **body})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["field"] == "starts_at"


def test_far_future_end_is_a_validation_error(client: TestClient) -> None:
    r = client.post("/api/v1/ops/silences", json={"matchers": M, "comment": "c", "ends_at": "9999-12-31T23:59:59Z"})
    assert r.status_code == 422 and r.json()["field"] == "ends_at"
    assert client.get("/api/v1/ops/silences").json()["silences"] == []


def test_a_long_but_sane_silence_is_accepted(client: TestClient) -> None:
    r = client.post("/api/v1/ops/silences", json={"matchers": M, "comment": "c", "duration": "365d"})
    assert r.status_code == 201 and r.json()["state"] == "active"


def test_cli_rejects_a_huge_duration_with_a_message(client: TestClient, sample_runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(sample_runtime.settings.data_dir))
    out = CliRunner().invoke(cli_app, ["alerts", "silence", *M, "--for", "99999999999999d", "--comment", "c"])
    assert out.exit_code == 2 and "duration" in out.output, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
