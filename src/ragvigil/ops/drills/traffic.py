"""Bounded synthetic traffic: a few users asking questions, each in a session of their own.

Closed loop (each user waits for the answer, then asks again) measures what the instance can do;
open loop (requests started at a fixed rate whatever the answers) is how a burst really arrives.
Both stop by themselves: at ``max_requests`` or ``duration_s``, whichever comes first. Every outcome
is kept, so a drill can check afterwards that every acknowledged turn was stored.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ragvigil.ops.drills.client import InstanceClient, TurnOutcome

QUESTIONS = (  # help-centre questions in both languages (the bundled sample knowledge base answers them)
    "How do I export my notes?",
    "怎么申请退款？",
    "Which payment methods can I use?",
    "如何开启两步验证？",
    "How do I install the desktop app?",
    "离线模式怎么用？",
)
MAX_REQUESTS = 5_000  # whatever a caller asks for: a drill never becomes a load test of someone else's box
MAX_DURATION_S = 600.0


@dataclass
class Traffic:
    """The outcomes of one traffic run, in the order they were sent."""

    outcomes: list[TurnOutcome] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: TurnOutcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[TurnOutcome]:
        with self._lock:
            return sorted(self.outcomes, key=lambda o: o.sent_at)


class Users:
    """``count`` synthetic users; each keeps one session so its turns can be counted afterwards."""

    def __init__(self, client: InstanceClient, count: int, prefix: str) -> None:
        self.client = client
        self.sessions: list[str | None] = [None] * count
        self.user_ids = [f"{prefix}-{i}" for i in range(count)]
        self._questions = itertools.cycle(QUESTIONS)
        self._lock = threading.Lock()

    def ask(self, user: int) -> TurnOutcome:
        with self._lock:
            question = next(self._questions)
        out = self.client.chat(question, self.sessions[user], self.user_ids[user])
        if out.answered and self.sessions[user] is None:
            self.sessions[user] = out.session_id
        return out


def closed_loop(users: Users, duration_s: float, max_requests: int, stop: threading.Event | None = None) -> Traffic:
    """Every user asks, waits for the answer, asks again, until the time or the request count is used."""
    duration_s, max_requests = min(duration_s, MAX_DURATION_S), min(max_requests, MAX_REQUESTS)
    traffic, sent, lock = Traffic(), [0], threading.Lock()
    deadline = time.monotonic() + duration_s
    stop = stop or threading.Event()

    def user_loop(user: int) -> None:
        while time.monotonic() < deadline and not stop.is_set():
            with lock:
                if sent[0] >= max_requests:
                    return
                sent[0] += 1
            out = users.ask(user)
            traffic.add(out)
            if out.shed or out.status == 0:  # told to come back later (or nobody answered): do not hammer
                stop.wait(0.2)

    threads = [threading.Thread(target=user_loop, args=(u,), daemon=True) for u in range(len(users.sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + 60)  # a request in flight at the deadline has its own client timeout
    return traffic


def open_loop(users: Users, rate_per_s: float, duration_s: float, max_requests: int) -> Traffic:
    """Start requests at ``rate_per_s`` whatever the answers (as a burst of real users would)."""
    duration_s, max_requests = min(duration_s, MAX_DURATION_S), min(max_requests, MAX_REQUESTS)
    count = min(max_requests, max(1, round(rate_per_s * duration_s)))
    traffic = Traffic()
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(256, max(4, count))) as pool:
        for i in range(count):
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(lambda u=i % len(users.sessions): traffic.add(users.ask(u)))
    return traffic
