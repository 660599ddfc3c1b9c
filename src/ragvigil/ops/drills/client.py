"""The HTTP face of a running instance, as a drill sees it: chat, health, alerts, incidents and faults.

A drill talks to ragvigil only over its public API, so the same drill runs against the instance of
a test, a staging box or ``ragvigil serve`` on a laptop. Every call has a timeout; none retries
(a drill measures what a client would see).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx


class DrillError(RuntimeError):
    """The instance refused what the drill needs (no key, faults disabled, unreachable)."""


@dataclass
class TurnOutcome:
    """What one synthetic user saw for one message."""

    sent_at: float  # monotonic seconds
    latency_s: float
    status: int  # 0: no HTTP answer at all (connection refused, timeout)
    session_id: str | None = None
    message_id: str | None = None
    degraded: bool = False
    provider: str | None = None
    retry_after: bool = False  # a 429/503 said when to come back
    error: str | None = None
    reasons: tuple[str, ...] = ()  # degraded_reasons of an answer ("safe mode", a failover)

    @property
    def answered(self) -> bool:
        return 200 <= self.status < 300 and self.message_id is not None

    @property
    def shed(self) -> bool:
        """Refused on purpose, with a time to come back: load shedding (503) or a rate limit (429)."""
        return self.status in (429, 503) and self.retry_after

    @property
    def failed(self) -> bool:
        return not self.answered and not self.shed


def chat_body(message: str, session_id: str | None, user_id: str | None) -> dict[str, Any]:
    """The body of ``POST /api/v1/chat`` a synthetic user sends."""
    body: dict[str, Any] = {"message": message}
    if session_id:
        body["session_id"] = session_id
    if user_id:
        body["user_id"] = user_id
    return body


def unanswered(start: float, session_id: str | None, exc: BaseException) -> TurnOutcome:
    """A chat request that got no HTTP answer at all (refused, reset, timed out)."""
    return TurnOutcome(start, time.monotonic() - start, 0, session_id, error=type(exc).__name__)


def answered(start: float, status: int, retry_after: bool, raw: bytes, session_id: str | None) -> TurnOutcome:
    """The outcome of a chat request that got an HTTP answer (the client's and the load generator's alike)."""
    out = TurnOutcome(start, time.monotonic() - start, status, session_id)
    out.retry_after = retry_after
    try:
        data = json.loads(raw)
    except ValueError:
        out.error = "body is not JSON"
        return out
    if 200 <= status < 300:
        out.session_id = data.get("session_id", session_id)
        out.message_id = data.get("message_id")
        out.degraded = bool(data.get("degraded"))
        out.provider = data.get("provider")
        out.reasons = tuple(str(r) for r in data.get("degraded_reasons") or ())
    else:
        out.error = str(data.get("code"))
    return out


class InstanceClient:
    """A small synchronous client; one per drill run (httpx's connection pool is thread-safe)."""

    def __init__(
        self, url: str, api_key: str | None = None, timeout_s: float = 30.0, user_key: str | None = None
    ) -> None:
        """``api_key`` (admin) for faults, alerts and incidents; ``user_key`` for the synthetic users' chat
        (None: they ask without a key, as a development instance on loopback allows)."""
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.user_authorization = f"Bearer {user_key}" if user_key else None  # what the synthetic users send
        self._http = self._client(api_key, timeout_s)
        self._users = self._client(user_key, timeout_s)

    def _client(self, key: str | None, timeout_s: float) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    def close(self) -> None:
        self._http.close()
        self._users.close()

    # --- the user's side ---------------------------------------------------------------------
    def chat(self, message: str, session_id: str | None = None, user_id: str | None = None) -> TurnOutcome:
        start = time.monotonic()
        try:
            resp = self._users.post("/api/v1/chat", json=chat_body(message, session_id, user_id))
        except httpx.HTTPError as exc:
            return unanswered(start, session_id, exc)
        return answered(start, resp.status_code, "retry-after" in resp.headers, resp.content, session_id)

    def message_ids(self, session_id: str) -> list[str] | None:
        """Ids of the assistant messages stored in a session (None: could not be read now)."""
        try:
            resp = self._http.get(f"/api/v1/sessions/{session_id}/messages")
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        return [m["id"] for m in resp.json() if m.get("role") == "assistant"]

    # --- the operator's side -----------------------------------------------------------------
    def ready(self) -> bool:
        try:
            return self._http.get("/health/ready", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def health(self) -> dict[str, Any]:
        return self._get("/health", ok=(200, 503))

    def metric(self, name: str) -> float | None:
        """The sum of a metric's samples on ``/metrics`` (None: absent or unreadable)."""
        try:
            resp = self._http.get("/metrics", timeout=10.0)
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in resp.text.splitlines()
            if line.startswith(name) and (line[len(name)] in " {") and not line.startswith("#")
        ]
        return sum(values) if values else None

    def admission(self) -> dict[str, Any]:
        """``GET /api/v1/ops/admission`` (the limit, its latencies, what was shed); empty when unreadable."""
        try:
            resp = self._http.get("/api/v1/ops/admission", timeout=10.0)
        except httpx.HTTPError:
            return {}
        return resp.json() if resp.status_code == 200 else {}

    def canary(self) -> dict[str, Any]:
        """``GET /api/v1/ops/canary`` (passing, last run, last failure); empty when unreadable."""
        return self._get_or_empty("/api/v1/ops/canary")

    def safe_mode(self) -> dict[str, Any]:
        """``GET /api/v1/ops/safe-mode`` (active, by, reason); empty when unreadable."""
        return self._get_or_empty("/api/v1/ops/safe-mode")

    def _get_or_empty(self, path: str) -> dict[str, Any]:
        try:
            resp = self._http.get(path, timeout=10.0)
        except httpx.HTTPError:
            return {}
        return resp.json() if resp.status_code == 200 else {}

    def firing_alerts(self) -> list[dict[str, Any]]:
        """Firing alerts of the built-in engine (empty when it is off or unreachable)."""
        try:
            resp = self._http.get("/api/v1/ops/alerts", params={"state": "firing"}, timeout=10.0)
        except httpx.HTTPError:
            return []
        return resp.json().get("alerts", []) if resp.status_code == 200 else []

    def incidents(self, limit: int = 50) -> list[dict[str, Any]]:
        try:
            resp = self._http.get("/api/v1/ops/incidents", params={"limit": limit}, timeout=10.0)
        except httpx.HTTPError:
            return []
        if resp.status_code != 200:
            return []
        data = resp.json()
        return data.get("incidents", data) if isinstance(data, dict) else data

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        try:
            resp = self._http.get(f"/api/v1/ops/incidents/{incident_id}", timeout=10.0)
        except httpx.HTTPError:
            return None
        return resp.json() if resp.status_code == 200 else None

    def providers(self) -> list[dict[str, Any]] | None:
        """The provider router's view (None: this instance has no router API)."""
        try:
            resp = self._http.get("/api/v1/ops/providers", timeout=10.0)
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        data = resp.json()
        return data.get("providers", data) if isinstance(data, dict) else data

    def inject(self, target: str, kind: str, duration_s: float, params: dict[str, Any] | None = None) -> str:
        body = {"target": target, "kind": kind, "duration_s": duration_s, "params": params or {}}
        resp = self._http.post("/api/v1/ops/faults", json=body, timeout=10.0)
        if resp.status_code != 201:
            raise DrillError(f"fault {target}/{kind} refused: {resp.status_code} {_message(resp)}")
        return str(resp.json()["id"])

    def clear_fault(self, fault_id: str) -> None:
        resp = self._http.delete(f"/api/v1/ops/faults/{fault_id}", timeout=10.0)
        if resp.status_code not in (200, 204, 404):  # 404: it expired by itself already
            raise DrillError(f"clearing fault {fault_id} failed: {resp.status_code} {_message(resp)}")

    def clear_all_faults(self) -> bool:
        """Remove every active fault; False when the instance did not confirm (they still expire by themselves)."""
        try:
            return self._http.delete("/api/v1/ops/faults", timeout=10.0).status_code in (200, 204)
        except httpx.HTTPError:
            return False

    def start_backup(self, verify: bool = True) -> dict[str, Any]:
        """Ask the instance for a backup (admin): the job it started."""
        resp = self._http.post("/api/v1/admin/backups", json={"verify": verify}, timeout=10.0)
        if resp.status_code != 202:
            raise DrillError(f"backup refused: {resp.status_code} {_message(resp)}")
        return resp.json()

    def backup_job(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/admin/backups/{job_id}")

    def _get(self, path: str, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
        try:
            resp = self._http.get(path, timeout=10.0)
        except httpx.HTTPError as exc:
            raise DrillError(f"{self.url}{path} unreachable: {exc}") from exc
        if resp.status_code not in ok:
            raise DrillError(f"{path}: {resp.status_code} {_message(resp)}")
        return resp.json()


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    return f"{data.get('code')}: {data.get('message')}" if isinstance(data, dict) else str(data)[:200]
