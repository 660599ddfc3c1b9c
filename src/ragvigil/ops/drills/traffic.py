"""Bounded synthetic traffic: a few users asking questions, each in a session of their own.

Closed loop (each user waits for the answer, then asks again) measures what the instance can do;
open loop (requests started at a fixed rate whatever the answers) is how a burst really arrives.
Both stop by themselves: at ``max_requests`` or ``duration_s``, whichever comes first. Every outcome
is kept, so a drill can check afterwards that every acknowledged turn was stored.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ragvigil.ops.drills.client import InstanceClient, TurnOutcome
from ragvigil.ops.drills.loadgen import ChatLoad

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
        return self.note(user, self.client.chat(self.next_question(), self.sessions[user], self.user_ids[user]))

    def next_question(self) -> str:
        with self._lock:
            return next(self._questions)

    def note(self, user: int, out: TurnOutcome) -> TurnOutcome:
        """Keep the session a user's first answer opened."""
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
    """Start requests at ``rate_per_s`` whatever the answers (as a burst of real users would).

    Over plain http the requests come from one event loop (``loadgen.ChatLoad``), so the generator
    leaves the CPU to the instance; otherwise from a pool of threads.
    """
    duration_s, max_requests = min(duration_s, MAX_DURATION_S), min(max_requests, MAX_REQUESTS)
    count = min(max_requests, max(1, round(rate_per_s * duration_s)))
    if users.client.url.startswith("http://"):
        return asyncio.run(_open_loop_async(users, rate_per_s, count))
    traffic = Traffic()
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(256, max(4, count))) as pool:
        for i in range(count):
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(lambda u=i % len(users.sessions): traffic.add(users.ask(u)))
    return traffic


async def _open_loop_async(users: Users, rate_per_s: float, count: int) -> Traffic:
    traffic = Traffic()
    load = ChatLoad(users.client.url, users.client.user_authorization, users.client.timeout_s)

    async def one(user: int) -> None:
        out = await load.chat(users.next_question(), users.sessions[user], users.user_ids[user])
        traffic.add(users.note(user, out))

    tasks = []
    start = time.monotonic()
    try:
        for i in range(count):
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i % len(users.sessions))))
        await asyncio.gather(*tasks)
    finally:
        load.close()
    return traffic
