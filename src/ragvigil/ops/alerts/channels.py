"""Notification channels: a generic webhook (Alertmanager's payload), Slack, email, DingTalk, Feishu, WeCom.

Each channel turns a ``Notification`` (one routing group's alerts) into its own request and raises
``DeliveryError`` when the receiver does not accept it; retries, the delivery log and health live in
``notifier.py``. Messages come in Chinese or English (``language``). DingTalk and Feishu robots are
signed with the robot's secret exactly as their documentation says (HMAC-SHA256, base64).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from ragvigil.config import ChannelSettings
from ragvigil.ops.alerts.incidents import AlertNotice


class DeliveryError(Exception):
    """The receiver refused or could not be reached; the message says which and why."""


@dataclass
class Notification:
    """What one routing group announces: its alerts, firing and just resolved."""

    group_key: str
    group_labels: dict[str, str]
    alerts: list[AlertNotice]
    incident_ids: list[str] = field(default_factory=list)
    escalated_to: str | None = None
    external_url: str = ""

    @property
    def firing(self) -> list[AlertNotice]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    @property
    def severity(self) -> str:
        sevs = [a.severity for a in (self.firing or self.alerts)]
        return self.escalated_to or (min(sevs) if sevs else "P3")


def _iso(dt: datetime | None) -> str:
    return dt.isoformat().replace("+00:00", "Z") if dt else "0001-01-01T00:00:00Z"


def alertmanager_payload(n: Notification, receiver: str) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4), so anything that reads Alertmanager reads ragvigil."""
    common = _common([a.labels for a in n.alerts])
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common,
        "commonAnnotations": _common([a.annotations for a in n.alerts]),
        "externalURL": n.external_url,
        "alerts": [
            {
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": _iso(a.starts_at),
                "endsAt": _iso(a.ends_at),
                "generatorURL": n.external_url,
                "fingerprint": a.fingerprint,
            }
            for a in n.alerts
        ],
    }


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    out = dict(dicts[0])
    for d in dicts[1:]:
        out = {k: v for k, v in out.items() if d.get(k) == v}
    return out


_WORDS = {
    "en": {
        "firing": "FIRING",
        "resolved": "RESOLVED",
        "escalated": "escalated to",
        "runbook": "Runbook",
        "incident": "Incident",
    },
    "zh": {"firing": "告警", "resolved": "已恢复", "escalated": "已升级为", "runbook": "处理手册", "incident": "事件"},
}


def render_text(n: Notification, language: str = "en", markdown: bool = False) -> tuple[str, str]:
    """(title, body) of a notification in ``language``; ``markdown`` for the robots that render it."""
    w = _WORDS.get(language, _WORDS["en"])
    names = sorted({a.alertname for a in n.alerts})
    state = w[n.status]
    title = f"[{state}:{len(n.firing) or len(n.alerts)}] {n.severity} {', '.join(names)}"
    if language == "zh":
        title = f"【{state}:{len(n.firing) or len(n.alerts)}】{n.severity} {'、'.join(names)}"
    lines = [f"**{title}**" if markdown else title]
    if n.escalated_to:
        lines.append(f"{w['escalated']} {n.escalated_to}")
    for a in n.alerts:
        label_text = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k not in ("alertname", "severity"))
        summary = a.annotations.get("summary", "")
        mark = "✅" if a.status == "resolved" else "🔥"
        lines.append(f"- {mark} {a.alertname} {label_text} — {summary}".rstrip(" —"))
        if a.annotations.get("runbook_url") and a.status == "firing":
            lines.append(f"  {w['runbook']}: {a.annotations['runbook_url']}")
    if n.incident_ids:
        lines.append(f"{w['incident']}: {', '.join(n.incident_ids)}")
    return title, "\n".join(lines)


class Channel(Protocol):
    settings: ChannelSettings

    def send(self, n: Notification) -> None: ...


@dataclass
class _HttpChannel:
    settings: ChannelSettings

    def _post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        try:
            r = httpx.post(url, json=body, timeout=self.settings.timeout_s)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        if r.status_code >= 300:
            raise DeliveryError(f"HTTP {r.status_code}: {r.text[:200]}")
        return r

    @property
    def url(self) -> str:
        url = self.settings.url.get_secret_value() if self.settings.url else ""
        if not url:
            raise DeliveryError(f"channel {self.settings.name} has no url")
        return url


class WebhookChannel(_HttpChannel):
    def send(self, n: Notification) -> None:
        self._post(self.url, alertmanager_payload(n, self.settings.name))


class SlackChannel(_HttpChannel):
    def send(self, n: Notification) -> None:
        _, body = render_text(n, self.settings.language, markdown=False)
        r = self._post(self.url, {"text": body})
        if r.text.strip() not in ("ok", ""):
            raise DeliveryError(f"Slack answered {r.text[:200]!r}")


def _robot_errcode(r: httpx.Response, key: str = "errcode") -> None:
    """The IM robots answer 200 with an error code in the body; 0 means accepted."""
    try:
        data = r.json()
    except ValueError:
        raise DeliveryError(f"not a JSON answer: {r.text[:200]!r}") from None
    code = data.get(key, data.get("StatusCode", 0))
    if code not in (0, "0"):
        raise DeliveryError(f"{key} {code}: {data.get('errmsg') or data.get('msg')}")


class DingTalkChannel(_HttpChannel):
    def signed_url(self, now_ms: int | None = None) -> str:
        if self.settings.secret is None:
            return self.url
        ts = str(now_ms if now_ms is not None else int(time.time() * 1000))
        secret = self.settings.secret.get_secret_value()
        digest = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
        sign = urllib.parse.quote_plus(base64.b64encode(digest))
        return f"{self.url}{'&' if '?' in self.url else '?'}timestamp={ts}&sign={sign}"

    def send(self, n: Notification) -> None:
        title, body = render_text(n, self.settings.language, markdown=True)
        r = self._post(self.signed_url(), {"msgtype": "markdown", "markdown": {"title": title, "text": body}})
        _robot_errcode(r)


class FeishuChannel(_HttpChannel):
    @staticmethod
    def sign(secret: str, ts: int) -> str:
        # Feishu: HMAC-SHA256 keyed with "timestamp\nsecret" over an empty message
        return base64.b64encode(hmac.new(f"{ts}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()

    def send(self, n: Notification) -> None:
        _, body = render_text(n, self.settings.language)
        payload: dict[str, Any] = {"msg_type": "text", "content": {"text": body}}
        if self.settings.secret is not None:
            ts = int(time.time())
            payload.update(timestamp=str(ts), sign=self.sign(self.settings.secret.get_secret_value(), ts))
        _robot_errcode(self._post(self.url, payload), key="code")


class WeComChannel(_HttpChannel):
    def send(self, n: Notification) -> None:
        _, body = render_text(n, self.settings.language, markdown=True)
        _robot_errcode(self._post(self.url, {"msgtype": "markdown", "markdown": {"content": body}}))


@dataclass
class EmailChannel:
    settings: ChannelSettings

    def send(self, n: Notification) -> None:
        s = self.settings
        if not (s.smtp_host and s.smtp_from and s.smtp_to):
            raise DeliveryError(f"channel {s.name} needs smtp_host, smtp_from and smtp_to")
        title, body = render_text(n, s.language)
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = title, s.smtp_from, ", ".join(s.smtp_to)
        msg.set_content(body)
        context = ssl.create_default_context()
        if not s.tls_verify:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout_s) as smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=context)
                if s.smtp_username:
                    password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                    smtp.login(s.smtp_username, password)
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None


_TYPES: dict[str, type] = {
    "webhook": WebhookChannel,
    "slack": SlackChannel,
    "email": EmailChannel,
    "dingtalk": DingTalkChannel,
    "feishu": FeishuChannel,
    "wecom": WeComChannel,
}


def build_channel(settings: ChannelSettings) -> Channel:
    return _TYPES[settings.type](settings)  # type: ignore[no-any-return]


def test_notification() -> Notification:
    """What ``ragvigil alerts test-channel`` sends: clearly a test, shaped like a real P3 alert."""
    now = datetime.now(UTC)
    alert = AlertNotice(
        {"alertname": "RagvigilTestNotification", "severity": "P3"},
        {"summary": "test notification from ragvigil: this channel works / 测试通知：此渠道可用"},
        "firing",
        now,
    )
    return Notification('{}:{alertname="RagvigilTestNotification"}', {"alertname": "RagvigilTestNotification"}, [alert])
