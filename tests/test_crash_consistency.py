"""SIGKILL a real `ragvigil serve` mid-load, with PostgreSQL down for part of the load, and restart it:
every turn acknowledged with 2xx (a 200 answer, or a stream that delivered its ``done`` event) is
stored exactly once after the replay. Bounded: at most LOAD requests, 6 at a time, loopback only."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from ragvigil.app import Runtime
from tests.conftest import ROOT, make_settings
from tests.outages import postgres_or_skip
from tests.realservers import free_port, wait_until

FAQ = (
    b"# FAQ\nShipping takes three days. Returns are free within thirty days.\n\n"
    b"## Accounts\nYou can reset your password from the sign-in page."
)
QUESTIONS = ["How long does shipping take?", "Are returns free?", "How do I reset my password?"]
LOAD = 120  # requests in all (the last ones meet the killed server)
WORKERS = 6
DB_DOWN_AT, KILL_AT = 30, 80  # completed requests when PostgreSQL stops, and when the server is killed


@contextmanager
def serve(data: Path, db_url: str) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "RAGVIGIL_DATA_DIR": str(data),
        "RAGVIGIL_DATABASE_URL": db_url,
        "RAGVIGIL_ALERTS__ENABLED": "false",
        "RAGVIGIL_BACKGROUND_EMBEDDING": "false",
    }
    cmd = [sys.executable, "-c", "from ragvigil.cli import app; app()", "serve", "--port", str(port)]
    log = open(data.parent / "serve.log", "ab")  # noqa: SIM115 - the server writes to it while it runs
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base}/health/live", timeout=2).status_code == 200,
            120,
            "ragvigil serve to start",
            interval=0.2,
            abort=lambda: None if proc.poll() is None else f"exited with {proc.returncode}",
        )
        yield proc, base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Load:
    """Plain and streamed turns from a few users, each continuing its session; records what was acknowledged."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.acked: list[tuple[str, str]] = []  # (session_id, message_id) of every 2xx-acknowledged turn
        self.owners: dict[str, str] = {}  # session id -> the user it belongs to
        self.outcomes: Counter = Counter()
        self.sessions: dict[str, str] = {}
        self.completed = 0
        self.lock = threading.Lock()
        self.n = itertools.count()

    def one(self, user: str) -> None:
        i = next(self.n)
        with self.lock:
            session = self.sessions.get(user) if i % 5 else None  # now and then a new session
        body = {"message": QUESTIONS[i % len(QUESTIONS)], "user_id": user}
        if session:
            body["session_id"] = session
        try:
            acked = self._stream(body) if i % 2 else self._plain(body)
            outcome = "acked" if acked else "refused"
        except httpx.HTTPError:
            acked, outcome = None, "transport_error"  # the killed server: never acknowledged
        with self.lock:
            self.outcomes[outcome] += 1
            self.completed += 1
            if acked:
                self.acked.append(acked)
                self.sessions[user] = acked[0]
                self.owners[acked[0]] = user

    def _plain(self, body: dict) -> tuple[str, str] | None:
        r = httpx.post(f"{self.base}/api/v1/chat", json=body, timeout=30)
        if r.status_code != 200:
            assert r.status_code == 503, r.text  # a refusal is said out loud (never a silent drop, never a 404)
            return None
        return r.json()["session_id"], r.json()["message_id"]

    def _stream(self, body: dict) -> tuple[str, str] | None:
        event = None
        with httpx.stream("POST", f"{self.base}/api/v1/chat/stream", json=body, timeout=30) as r:
            if r.status_code != 200:
                return None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "done":
                    done = json.loads(line[6:])
                    return done["session_id"], done["message_id"]
        return None


@pytest.mark.postgres
def test_every_acknowledged_turn_survives_sigkill_and_a_database_outage_exactly_once(tmp_path: Path) -> None:
    pg = postgres_or_skip()
    try:
        url = pg.start()
        data = tmp_path / "data"
        rt = Runtime(make_settings(data, database_url=url))
        try:
            rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
        finally:
            rt.close()
        with serve(data, url) as (proc, base):
            load = Load(base)
            users = [f"user{u}" for u in range(WORKERS)]
            with ThreadPoolExecutor(WORKERS) as pool:
                futures = [pool.submit(load.one, users[i % WORKERS]) for i in range(LOAD)]
                wait_until(lambda: load.completed >= DB_DOWN_AT, 60, f"{DB_DOWN_AT} turns")
                pg.stop()  # the database goes away under load
                wait_until(lambda: load.completed >= KILL_AT, 60, f"{KILL_AT} turns")
                pending = list((data / "journal").glob("*.json"))
                os.killpg(proc.pid, signal.SIGKILL)  # mid-load, journal not replayed
                proc.wait(10)
                for f in futures:
                    f.result(60)
        assert pending, "some turns were acknowledged from the journal"
        assert load.outcomes["acked"] >= KILL_AT // 2, load.outcomes
        pg.start()  # the database is back, with what it had stored before
        with serve(data, url) as (_, base):
            wait_until(lambda: not list((data / "journal").glob("*.json")), 60, "the replay to empty the journal")
            after = httpx.post(f"{base}/api/v1/chat", json={"message": QUESTIONS[0]}, timeout=30)
            assert after.status_code == 200 and after.json()["degraded"] is False
            for sid, user in load.owners.items():
                r = httpx.get(f"{base}/api/v1/sessions/{sid}/messages", params={"user_id": user}, timeout=30)
                assert r.status_code == 200, r.text
                ids = [m["id"] for m in r.json()]
                assert len(ids) == len(set(ids)), f"duplicate messages in {sid}"
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                stored = Counter(r[0] for r in conn.execute(text("SELECT id FROM messages WHERE role = 'assistant'")))
        finally:
            engine.dispose()
        acked_ids = [m for _, m in load.acked]
        assert len(acked_ids) == len(set(acked_ids))
        missing = [m for m in acked_ids if stored[m] != 1]
        assert not missing, f"{len(missing)} acknowledged turns are not stored exactly once"
        assert not list((data / "journal" / "rejected").glob("*.json"))
    finally:
        pg.close()
