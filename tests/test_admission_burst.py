"""A burst against a real `ragvigil serve` whose LLM holds every answer: admission sheds, queues and prioritises.

The server's concurrency is capped at two, its queue at two, and the LLM (tests/slow_llm.py, a real
OpenAI-compatible server on loopback) answers only when the test releases it, so the limit is
reliably reached. Order, not timing, is asserted: the shed requests are answered while the LLM
still holds the admitted ones, i.e. they did not wait for a slot or a timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ragvigil.ops.admin_key import read_admin_key
from tests.conftest import ROOT
from tests.realservers import free_port, wait_until
from tests.slow_llm import SlowLLM, slow_llm

QUESTION = "How do I export my notes to PDF?"
CRISIS = "I want to kill myself. How do I export my notes to PDF?"
BURST = 8  # two run, two wait, four are refused


@contextmanager
def serve(data: Path, llm: SlowLLM) -> Iterator[str]:
    port = free_port()
    log = data.parent / "serve.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "RAGVIGIL_DATA_DIR": str(data),
        "RAGVIGIL_GENERATOR": "openai",
        "RAGVIGIL_OPENAI__BASE_URL": llm.url,
        "RAGVIGIL_OPENAI__TIMEOUT_S": "120",
        "RAGVIGIL_ALERTS__ENABLED": "false",
        "RAGVIGIL_BACKGROUND_EMBEDDING": "false",
        "RAGVIGIL_ADMISSION__INITIAL_LIMIT": "2",
        "RAGVIGIL_ADMISSION__MIN_LIMIT": "1",
        "RAGVIGIL_ADMISSION__MAX_LIMIT": "2",
        "RAGVIGIL_ADMISSION__QUEUE_SIZE": "2",
        "RAGVIGIL_ADMISSION__QUEUE_TIMEOUT_S": "60",  # the waiters must outlast the test's steps
        "RAGVIGIL_ADMISSION__SHED_FEATURES_AFTER_S": "0",
        "RAGVIGIL_ADMISSION__RESTORE_FEATURES_AFTER_S": "0.5",
    }
    cmd = [sys.executable, "-c", "from ragvigil.cli import app; app()", "serve", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base}/health/live", timeout=2).status_code == 200,
            120,
            "ragvigil serve to start",
            interval=0.2,
            abort=lambda: None if proc.poll() is None else f"exited with {proc.returncode}: {log.read_text()[-3000:]}",
        )
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Call(threading.Thread):
    def __init__(self, base: str, message: str) -> None:
        super().__init__(daemon=True)
        self.base, self.message = base, message
        self.response: httpx.Response | None = None

    def run(self) -> None:
        self.response = httpx.post(f"{self.base}/api/v1/chat", json={"message": self.message}, timeout=120)


def test_a_burst_is_shed_fast_the_admitted_succeed_and_a_crisis_turn_goes_first(
    sample_data_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    with slow_llm(hold_s=120) as llm, serve(data, llm) as base:
        key = read_admin_key(data)
        assert key
        ops = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)

        def state() -> dict:
            return ops.get("/api/v1/ops/admission").json()

        calls = [Call(base, QUESTION) for _ in range(BURST)]
        for c in calls:
            c.start()
        wait_until(
            lambda: (s := state())["in_flight"] == 2 and s["queued"] == 2 and s["shed"].get("queue_full") == 4,
            60,
            "two requests running, two queued, four shed",
            interval=0.1,
        )
        wait_until(lambda: sum(c.response is not None for c in calls) == 4, 30, "the shed requests answered")
        shed = [c.response for c in calls if c.response is not None]
        wait_until(lambda: llm.requests == 2, 60, "the two admitted turns waiting for the LLM")
        assert not llm.gate.is_set() and sum(c.response is None for c in calls) == 4  # the shed did not wait
        for r in shed:
            assert r.status_code == 503 and r.json()["code"] == "overloaded", r.text
            assert int(r.headers["Retry-After"]) >= 1
        # during the overload the probes and the ops routes answer, and the extras are shed
        assert httpx.get(f"{base}/health/live", timeout=10).status_code == 200
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200
        wait_until(
            lambda: not {f["name"]: f["enabled"] for f in state()["features"]}["contextual_search"], 30, "shedding"
        )

        crisis = Call(base, CRISIS)
        crisis.start()
        wait_until(lambda: state()["queued_by_priority"]["crisis"] == 1, 30, "the crisis turn queued first")
        assert state()["shed"].get("displaced") == 1  # a normal waiter made room for it
        wait_until(lambda: sum(c.response is not None for c in calls) == 5, 30, "the displaced request answered")

        llm.release()
        crisis.join(120)
        for c in calls:
            c.join(120)
        assert crisis.response is not None and crisis.response.status_code == 200, crisis.response
        assert crisis.response.json()["answer"]
        done = [c.response for c in calls]
        ok = [r for r in done if r is not None and r.status_code == 200]
        refused = [r for r in done if r is not None and r.status_code == 503]
        assert len(ok) == 3 and len(refused) == 5 and len(ok) + len(refused) == BURST
        final = state()
        assert final["admitted"] == {"normal": 3, "crisis": 1}
        assert final["in_flight"] == 0 and final["queued"] == 0
        wait_until(lambda: all(f["enabled"] for f in state()["features"]), 30, "features restored after the burst")
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'ragvigil_admission_shed_total{priority="normal",reason="queue_full"} 4.0' in metrics
        assert 'ragvigil_feature_switches_total{feature="contextual_search",to="on"} 1.0' in metrics
