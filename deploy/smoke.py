#!/usr/bin/env python3
"""Post-deploy smoke check: the instance is ready, answers one chat turn and has stored it.

Standard library only, so a deploy job runs it without installing ragvigil:

    python3 deploy/smoke.py https://ragvigil.example.com --key "$RAGVIGIL_SMOKE_KEY"

Exit 0 when the turn was answered (2xx, an answer and a message id) and reads back from the
session's history; 1 with the reason otherwise (the deploy job rolls back on it). Every step has a
timeout and readiness is waited for at most ``--ready-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

MAX_BODY = 1 << 20  # an answer is a few KB: read at most this much of any response


class SmokeFailure(Exception):
    """The step that failed and why, printed as the job's last line."""


def _call(base: str, method: str, path: str, key: str | None, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(MAX_BODY)
    except (urllib.error.URLError, OSError) as exc:
        raise SmokeFailure(f"{method} {path}: cannot reach {base}: {exc}") from exc
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode("utf-8", "replace")[:200]


def wait_ready(base: str, key: str | None, timeout: float) -> None:
    """/health/ready answers 200 (a rollout's new pods may still be loading their models)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            status, body = _call(base, "GET", "/health/ready", key, timeout=5)
            if status == 200:
                return
            last = f"{status} {body}"
        except SmokeFailure as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise SmokeFailure(f"not ready after {timeout:g}s: {last}")
        time.sleep(1)


def chat_once(base: str, key: str | None, message: str, kb: str | None, timeout: float) -> dict[str, Any]:
    """One turn, then its message read back from the session: answered and kept."""
    user = f"deploy-smoke-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {"message": message, "user_id": user}
    if kb:
        body["kb"] = kb
    status, answer = _call(base, "POST", "/api/v1/chat", key, body, timeout)
    if not 200 <= status < 300 or not isinstance(answer, dict):
        raise SmokeFailure(f"POST /api/v1/chat answered {status}: {answer}")
    session = answer.get("session_id")
    if not str(answer.get("answer", "")).strip() or not answer.get("message_id") or not session:
        raise SmokeFailure(f"POST /api/v1/chat gave no answer, message id or session: {answer}")
    path = f"/api/v1/sessions/{urllib.parse.quote(str(session))}/messages?user_id={urllib.parse.quote(user)}"
    status, messages = _call(base, "GET", path, key, timeout=timeout)
    if status != 200 or not isinstance(messages, list):
        raise SmokeFailure(f"GET the session's messages answered {status}: {messages}")
    if answer["message_id"] not in {m.get("id") for m in messages if isinstance(m, dict)}:
        raise SmokeFailure(f"the answer {answer['message_id']} is not in the session's history")
    return answer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="base URL of the deployed ragvigil (or the load balancer in front of it)")
    p.add_argument("--key", default=os.environ.get("RAGVIGIL_SMOKE_KEY"), help="API key (client role)")
    p.add_argument("--message", default="How do I reset my password?", help="the question asked")
    p.add_argument("--kb", default=None, help="knowledge base to ask (default: the instance's)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for readiness")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    args = p.parse_args(argv)
    try:
        wait_ready(args.url, args.key, args.ready_timeout)
        answer = chat_once(args.url, args.key, args.message, args.kb, args.timeout)
    except SmokeFailure as exc:
        print(f"smoke check FAILED: {exc}", file=sys.stderr)
        return 1
    note = f" (degraded: {', '.join(answer.get('degraded_reasons') or [])})" if answer.get("degraded") else ""
    print(f"smoke check ok: {args.url} answered and stored message {answer['message_id']}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
