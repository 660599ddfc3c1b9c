"""Routing like Alertmanager (grouping, timers, inhibition, silences, escalation), incidents, channels.

Channels are tested against real receivers on loopback (HTTP servers, an aiosmtpd SMTP server with
STARTTLS and AUTH): the assertions are on what the receivers got.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ragvigil.config import ChannelSettings, RoutingSettings
from ragvigil.ops.alerts.channels import Notification, build_channel
from ragvigil.ops.alerts.engine import AlertEngine
from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.incidents import AlertNotice, IncidentStore
from ragvigil.ops.alerts.notifier import Notifier
from ragvigil.ops.alerts.router import Router
from ragvigil.ops.alerts.rules import load_rules
from ragvigil.ops.alerts.silences import SilenceStore, parse_matcher
from ragvigil.storage.db import Database, migrate
from tests.receivers import http_receiver

T0 = 1_700_000_000.0
RULES = "groups:\n  - name: t\n    rules:\n" + textwrap.indent(
    textwrap.dedent(
        """\
        - alert: RagvigilUnhealthy
          expr: down > 0
          labels: {severity: P1}
          annotations: {summary: "service down"}
        - alert: HighErrorRate
          expr: errors > 0
          labels: {severity: P2}
          annotations: {summary: "errors on {{ $labels.route }}"}
        - alert: SlowDisk
          expr: slow > 0
          labels: {severity: P3}
        """
    ),
    "      ",
)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'alerts.db'}")
    migrate(database.engine)
    return database


class World:
    """An engine, a router and a list of what the router handed to the notifier, on a fake clock."""

    def __init__(self, db: Database, **routing: object) -> None:
        self.history = SignalHistory(retention_s=7200)
        self.engine = AlertEngine(load_rules(RULES), self.history)
        self.incidents = IncidentStore(db)
        self.silences = SilenceStore(db, cache_s=0)
        self.sent: list[Notification] = []
        self.router = Router(RoutingSettings(**routing), self.incidents, self.silences, self.sent.append)
        self.t = T0

    def step(self, seconds: float, **signals: object) -> list[Notification]:
        """Advance the clock, record the signals (name -> value or {route: value}), evaluate and route."""
        self.t += seconds
        samples = []
        for name, value in signals.items():
            if isinstance(value, dict):
                samples += [(name, {"route": r}, float(v)) for r, v in value.items()]
            else:
                samples.append((name, {}, float(value)))  # type: ignore[arg-type]
        self.history.add(self.t, samples)
        self.engine.evaluate(self.t)
        before = len(self.sent)
        self.router.process(self.engine.alerts(["firing", "resolved"]), self.t)
        return self.sent[before:]


def names(n: Notification) -> list[tuple[str, str]]:
    return sorted((a.alertname, a.status) for a in n.alerts)


def test_grouping_waits_repeats_and_announces_the_resolution_once(db: Database) -> None:
    w = World(db, group_wait=10, group_interval=60, repeat_interval=300)
    assert w.step(0, errors={"/a": 1}) == []  # group_wait: not yet
    assert w.step(5, errors={"/a": 1, "/b": 1}) == []
    first = w.step(5, errors={"/a": 1, "/b": 1})  # 10 s after the group began: one notification, both routes
    assert len(first) == 1 and names(first[0]) == [("HighErrorRate", "firing")] * 2
    quiet = [n for _ in range(20) for n in w.step(10, errors={"/a": 1, "/b": 1})]  # 200 s: nothing new
    assert quiet == []
    repeats = [n for _ in range(12) for n in w.step(10, errors={"/a": 1, "/b": 1})]  # past repeat_interval
    assert len(repeats) == 1
    changed = [n for _ in range(7) for n in w.step(10, errors={"/a": 1, "/b": 0})]  # /b recovers
    assert len(changed) == 1 and ("HighErrorRate", "resolved") in names(changed[0])
    done = [n for _ in range(7) for n in w.step(10, errors={"/a": 0, "/b": 0})]
    assert len(done) == 1 and names(done[0]) == [("HighErrorRate", "resolved")]
    assert [n for _ in range(40) for n in w.step(10, errors={"/a": 0})] == []  # announced once, group closed


def test_a_p1_group_is_sent_at_once(db: Database) -> None:
    w = World(db, group_wait=30)
    sent = w.step(0, down=1)
    assert len(sent) == 1 and sent[0].severity == "P1"


def test_service_down_inhibits_what_it_explains_and_takes_it_into_its_incident(db: Database) -> None:
    w = World(db, group_wait=0)
    sent = w.step(0, down=1, errors={"/a": 1}, slow=1)
    assert sorted(a for n in sent for a, _ in names(n)) == ["RagvigilUnhealthy"]  # P2 and P3 held back
    assert set(w.router.suppressed.values()) == {"inhibited by RagvigilUnhealthy"}
    incidents = w.incidents.list()
    assert len(incidents) == 1 and incidents[0]["severity"] == "P1"
    detail = w.incidents.get(incidents[0]["id"])
    assert sorted(a["alertname"] for a in detail["alerts"]) == ["HighErrorRate", "RagvigilUnhealthy", "SlowDisk"]
    # the service comes back but errors go on: now the error alert pages on its own
    later = w.step(3, down=0, errors={"/a": 1}, slow=0)
    assert [a for n in later for a, s in names(n) if s == "firing"] == ["HighErrorRate"]


def test_silences_mute_matching_alerts_until_they_end(db: Database) -> None:
    w = World(db, group_wait=0)
    start = datetime.fromtimestamp(T0, UTC)
    silence = w.silences.create(
        [parse_matcher('alertname="HighErrorRate"'), parse_matcher('route=~"/a|/c"')],
        start,
        start + timedelta(minutes=10),
        "ops@example.com",
        "deploying the fix",
    )
    sent = w.step(1, errors={"/a": 1, "/b": 1})
    assert [a.labels["route"] for n in sent for a in n.alerts] == ["/b"]
    assert list(w.router.suppressed.values()) == [f"silenced by {silence['id']}"]
    assert len(w.incidents.get(w.incidents.list()[0]["id"])["alerts"]) == 2  # silenced still recorded
    after = [n for _ in range(12) for n in w.step(60, errors={"/a": 1, "/b": 1})]  # the silence has ended
    assert "/a" in {a.labels["route"] for n in after for a in n.alerts}
    with pytest.raises(ValueError, match="operator"):
        parse_matcher({"name": "severity", "op": "~=", "value": "P1"})


def test_unacknowledged_incidents_escalate_and_acknowledged_ones_do_not(db: Database) -> None:
    w = World(db, group_wait=0, escalate_p2_after=1800, escalate_p3_after=7200)
    w.step(0, errors={"/a": 1}, slow=1)
    by_name = {i["title"].split(":")[0]: i for i in w.incidents.list()}
    w.incidents.acknowledge(by_name["SlowDisk"]["id"], "oncall@example.com", "looking")
    escalated = [n for _ in range(31) for n in w.step(60, errors={"/a": 1}, slow=1) if n.escalated_to]
    assert [(n.escalated_to, n.incident_ids) for n in escalated] == [("P1", [by_name["HighErrorRate"]["id"]])]
    incident = w.incidents.get(by_name["HighErrorRate"]["id"])
    assert incident["severity"] == "P1" and [e["kind"] for e in incident["timeline"]][-1] == "escalated"
    assert w.incidents.get(by_name["SlowDisk"]["id"])["severity"] == "P3"  # acknowledged: stays


def test_replayed_notices_do_not_duplicate_incidents(db: Database) -> None:
    store = IncidentStore(db)
    starts = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    firing = AlertNotice(
        {"alertname": "X", "severity": "P2"}, {"summary": "x"}, "firing", starts, source="alertmanager"
    )
    for _ in range(3):
        store.record([firing], "g")
    assert len(store.list()) == 1 and len(store.get(store.list()[0]["id"])["alerts"]) == 1
    resolved = AlertNotice(firing.labels, firing.annotations, "resolved", starts, starts + timedelta(minutes=2))
    for _ in range(2):
        store.record([resolved], "g")
    incident = store.get(store.list()[0]["id"])
    assert incident["status"] == "resolved"
    assert [e["kind"] for e in incident["timeline"]] == ["opened", "alert_firing", "alert_resolved", "resolved"]


def notification() -> Notification:
    starts = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    alert = AlertNotice(
        {"alertname": "VectorStoreDown", "severity": "P1", "check": "vector_store"},
        {"summary": "vector store is down", "runbook_url": "docs/runbooks.md#vectorstoredown"},
        "firing",
        starts,
    )
    return Notification('{}:{alertname="VectorStoreDown"}', {"alertname": "VectorStoreDown"}, [alert], ["inc1"])


def test_webhook_slack_wecom_deliver_what_their_receivers_expect() -> None:
    with http_receiver() as hook, http_receiver() as slack, http_receiver(reply=b'{"errcode":0}') as wecom:
        notifier = Notifier(
            [
                build_channel(ChannelSettings(name="hook", type="webhook", url=hook.url)),
                build_channel(ChannelSettings(name="slack", type="slack", url=slack.url)),
                build_channel(ChannelSettings(name="wecom", type="wecom", url=wecom.url, language="zh")),
            ]
        )
        results = notifier.deliver(notification())
        assert all(r.ok for r in results), results
        payload = hook.requests[0].body
        assert payload["version"] == "4" and payload["status"] == "firing" and payload["receiver"] == "hook"
        assert payload["alerts"][0]["labels"]["check"] == "vector_store"
        assert payload["alerts"][0]["startsAt"] == "2026-11-24T06:00:00Z"
        assert payload["commonLabels"]["alertname"] == "VectorStoreDown"
        assert "[FIRING:1] P1 VectorStoreDown" in slack.requests[0].body["text"]
        assert "【告警:1】P1 VectorStoreDown" in wecom.requests[0].body["markdown"]["content"]
        assert "处理手册" in wecom.requests[0].body["markdown"]["content"]


def test_dingtalk_and_feishu_requests_are_signed_as_documented() -> None:
    with http_receiver(reply=b'{"errcode":0,"errmsg":"ok"}') as ding, http_receiver(reply=b'{"code":0}') as feishu:
        notifier = Notifier(
            [
                build_channel(
                    ChannelSettings(name="ding", type="dingtalk", url=ding.url + "?access_token=t", secret="SECa")
                ),
                build_channel(ChannelSettings(name="fs", type="feishu", url=feishu.url, secret="fsb", language="zh")),
            ]
        )
        sent_from = int(time.time() * 1000)
        assert all(r.ok for r in notifier.deliver(notification()))
        sent_until = int(time.time() * 1000)
    q = ding.requests[0].query
    expected = base64.b64encode(hmac.new(b"SECa", f"{q['timestamp']}\nSECa".encode(), hashlib.sha256).digest()).decode()
    assert q["access_token"] == "t" and q["sign"] == expected
    assert sent_from <= int(q["timestamp"]) <= sent_until  # milliseconds, taken when the request was signed
    assert ding.requests[0].body["msgtype"] == "markdown"
    body = feishu.requests[0].body
    key = f"{body['timestamp']}\nfsb".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["content"]["text"].startswith("【告警:1】")


def test_a_failing_channel_is_retried_logged_and_reported_down(db: Database) -> None:
    incidents = IncidentStore(db)
    with http_receiver(status=500, reply=b"boom") as broken, http_receiver() as fine:
        notifier = Notifier(
            [
                build_channel(ChannelSettings(name="broken", type="webhook", url=broken.url, attempts=2)),
                build_channel(ChannelSettings(name="fine", type="webhook", url=fine.url)),
            ],
            db,
            incidents,
            backoff_s=0.01,
        )
        for _ in range(3):
            results = {r.channel: r for r in notifier.deliver(notification())}
        assert results["broken"].attempts == 2 and "HTTP 500" in (results["broken"].error or "")
        assert len(broken.requests) == 6 and len(fine.requests) == 3
    with pytest.raises(RuntimeError, match="broken"):
        notifier.check()
    from ragvigil.ops.metrics import REGISTRY

    assert REGISTRY.get_sample_value("ragvigil_notification_channel_up", {"channel": "broken"}) == 0
    log = notifier.deliveries(channel="broken")
    assert len(log) == 3 and {d["outcome"] for d in log} == {"failed"}
    # and the default pack turns that into an alert of its own
    from ragvigil.ops.alerts.service import AlertService

    service = AlertService(REGISTRY)
    service.tick(T0)
    service.tick(T0 + 61)
    failing = [a for a in service.engine.alerts(["firing"]) if a.rule == "NotificationChannelFailing"]
    assert [a.labels["channel"] for a in failing] == ["broken"]


def test_email_goes_through_starttls_and_auth(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.realservers import free_port

    cert, key = self_signed(tmp_path)
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            received.append((session.authenticated, envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
        ok = isinstance(data, LoginPassword) and data.login == b"alerts" and data.password == b"s3cret"
        return AuthResult(success=ok)

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    port = free_port()
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True, authenticator=authenticator
    )
    controller.start()
    try:
        channel = ChannelSettings(
            name="mail",
            type="email",
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_username="alerts",
            smtp_password="s3cret",
            smtp_from="ragvigil@example.com",
            smtp_to=["oncall@example.com"],
            tls_verify=False,
            language="zh",
        )
        results = Notifier([build_channel(channel)]).deliver(notification())
        assert results[0].ok, results[0].error
        bad = channel.model_copy(update={"name": "bad", "smtp_password": "wrong", "attempts": 1})
        assert not Notifier([build_channel(bad)]).deliver(notification())[0].ok
    finally:
        controller.stop()
    authenticated, sender, rcpt, content = received[0]
    assert authenticated and sender == "ragvigil@example.com" and rcpt == ["oncall@example.com"]
    assert "Subject:" in content and "VectorStoreDown" in content
    assert len(received) == 1


def self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_without_channels_nothing_queues_up() -> None:
    notifier = Notifier([])
    for _ in range(2000):
        notifier.submit(notification())
    assert notifier._queue.qsize() == 0 and notifier.drain(1)


def test_one_delivery_of_many_alerts_files_each_once_in_order(db: Database) -> None:
    """A batch is filed against a view read once: its own new episodes, resolutions and late copies count."""
    store = IncidentStore(db)
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def notice(i: int, status: str, starts: datetime, ends: datetime | None = None) -> AlertNotice:
        return AlertNotice(
            labels={"alertname": f"Many{i}", "severity": "P3"},
            annotations={},
            status=status,
            starts_at=starts,
            ends_at=ends,
            source="alertmanager",
        )

    many = [notice(i, "firing", t0) for i in range(1200)]  # more than one chunk of fingerprints
    many += [notice(7, "firing", t0)]  # a repeat in the same batch joins its episode
    many += [notice(8, "resolved", t0, t0 + timedelta(minutes=1))]  # resolved in the same batch
    many += [notice(8, "firing", t0)]  # a late copy of the episode that just resolved: ignored
    many += [notice(9, "firing", t0 + timedelta(minutes=2))]
    (incident_id,) = store.record(many, "group-many")
    incident = store.get(incident_id)
    states = {(a["alertname"], a["state"]) for a in incident["alerts"]}
    assert len(incident["alerts"]) == 1200  # one episode per alert: the repeat and the late copy opened none
    assert ("Many8", "resolved") in states and ("Many7", "firing") in states
    assert incident["status"] == "open"
    # the next delivery resolves them all: the incident resolves with its last alert
    ends = t0 + timedelta(minutes=5)
    store.record([notice(i, "resolved", t0, ends) for i in range(1200) if i != 8], "group-many")
    assert store.get(incident_id)["status"] == "resolved"
