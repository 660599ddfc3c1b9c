"""What operators see of the hand-off queue: queued hand-offs counted (database or spool), the spool's
backlog, and the records waiting for a person by priority, refreshed on change and by the replayer,
never by a query per scrape."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, update

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.handoff import Handoffs
from ragvigil.chat.understanding import TurnAnalysis
from ragvigil.ops import metrics
from ragvigil.storage.models import HandoffRecord
from tests.conftest import admin_key, auth, local_client, make_settings
from tests.handoff_cases import CRISIS, FAQ, HUMAN, Given, understand_as
from tests.outages import SqliteOutage


@dataclass
class Instance:
    rt: Runtime
    client: TestClient
    parts: Handoffs
    given: Given
    key: str

    def chat(self, message: str, analysis: TurnAnalysis, session_id: str | None = None) -> dict:
        self.given.analysis = analysis
        body = {"message": message, "user_id": "u1"} | ({"session_id": session_id} if session_id else {})
        r = self.client.post("/api/v1/chat", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/metrics`` as Prometheus reads it: every sample by name and labels."""
        r = self.client.get("/metrics")  # keyless from loopback, as a local Prometheus scrapes
        assert r.status_code == 200, r.text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text)
            for s in fam.samples
        }


def queued(reason: str, priority: int) -> float:
    return (
        metrics.REGISTRY.get_sample_value("ragvigil_handoffs_total", {"reason": reason, "priority": str(priority)})
        or 0.0
    )


def open_(scraped: dict, priority: int) -> float | None:
    return scraped.get(("ragvigil_handoffs_open", (("priority", str(priority)),)))


def spool_pending(scraped: dict) -> float | None:
    return scraped.get(("ragvigil_handoff_spool_pending", ()))


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Instance]:
    rt = Runtime(make_settings(tmp_path / "data"))
    given = Given()
    parts = understand_as(rt, given)
    try:
        rt.ingestor.ingest_bytes("default", "faq.md", FAQ)
        with local_client(create_app(runtime=rt)) as c:
            warm = c.post("/api/v1/chat", json={"message": "How long does shipping take?", "user_id": "u0"})
            assert warm.status_code == 200, warm.text  # the knowledge base is known before any outage
            yield Instance(rt, c, parts, given, admin_key(rt))
    finally:
        rt.close()


def test_a_queued_crisis_is_counted_and_waits_in_the_open_gauge_until_claimed(inst: Instance) -> None:
    before = queued("crisis", 1)
    out = inst.chat("I have been saving up my pills", CRISIS)
    assert out["handoff"]["reason"] == "crisis"
    assert queued("crisis", 1) == before + 1
    seen = inst.scrape()
    assert open_(seen, 1) == 1 and open_(seen, 2) == 0 and open_(seen, 3) == 0  # every priority has a series
    # the same session asking again joins the record: counted as queued, still one waiting
    inst.chat("I still have them", CRISIS, out["session_id"])
    assert queued("crisis", 1) == before + 2 and open_(inst.scrape(), 1) == 1

    r = inst.client.post(f"/api/v1/handoffs/{out['handoff']['id']}/claim", headers=auth(inst.key))
    assert r.status_code == 200, r.text
    assert open_(inst.scrape(), 1) == 0  # claimed: a person has it, nothing waits
    r = inst.client.post(f"/api/v1/handoffs/{out['handoff']['id']}/close", headers=auth(inst.key), json={})
    assert r.status_code == 200, r.text
    assert open_(inst.scrape(), 1) == 0


def test_a_handoff_spooled_while_the_database_is_down_is_counted_and_pending_until_replayed(inst: Instance) -> None:
    inst.parts.replayer.stop()  # the test runs the passes itself
    outage = SqliteOutage(inst.rt.settings.data_dir / "ragvigil.db", inst.rt.db.engine)
    before = queued("human_request", 3)
    outage.stop()
    try:
        out = inst.chat("Let me talk to a real person", HUMAN)
        assert out["degraded"] and out["handoff"]["reason"] == "human_request"
        assert queued("human_request", 3) == before + 1  # counted when spooled
        assert spool_pending(inst.scrape()) == 1
        inst.parts.replayer.tick()  # still down: still pending, the open gauge keeps its last values
        assert spool_pending(inst.scrape()) == 1
    finally:
        outage.start()
    inst.parts.replayer.tick()
    seen = inst.scrape()
    assert spool_pending(seen) == 0 and open_(seen, 3) == 1
    assert queued("human_request", 3) == before + 1  # the replay writes it, it does not count it again


def test_a_close_made_by_another_process_shows_after_the_replayers_next_pass(inst: Instance) -> None:
    inst.parts.replayer.stop()
    out = inst.chat("I have been saving up my pills", CRISIS)
    assert open_(inst.scrape(), 1) == 1
    # `ragvigil handoffs close` (or another instance) changes the row from another process: this one's
    # metrics are not told, only the database is
    with inst.rt.db.session(write=True) as s:
        s.execute(update(HandoffRecord).where(HandoffRecord.id == out["handoff"]["id"]).values(status="closed"))
    assert open_(inst.scrape(), 1) == 1  # this instance has not looked yet
    inst.parts.replayer.tick()
    assert open_(inst.scrape(), 1) == 0


def test_a_scrape_never_queries_the_handoffs_table(inst: Instance) -> None:
    inst.parts.replayer.stop()
    inst.chat("I have been saving up my pills", CRISIS)
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(inst.rt.db.engine, "before_cursor_execute", seen)
    try:
        for _ in range(3):
            assert open_(inst.scrape(), 1) == 1
    finally:
        event.remove(inst.rt.db.engine, "before_cursor_execute", seen)
    assert not [s for s in statements if "handoffs" in s.lower()]
