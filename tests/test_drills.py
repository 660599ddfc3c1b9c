"""Fault drills in their short form, run by `ragvigil drill` against a real `ragvigil serve` on loopback.

The instance has fault injection on, the sample help centre ingested, and one remote provider: a
scripted OpenAI-compatible server on loopback. Each drill injects its fault through the admin API,
drives bounded traffic, watches the alert and the instance's healing, always rolls the fault back,
and checks every acknowledged turn is stored. The test asserts what the drill measured: nothing
lost, every request answered or shed with Retry-After, the alert fired, the healing happened.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragvigil.ops.drills import DRILLS
from tests.slow_llm import scripted_llm

REPO = Path(__file__).resolve().parents[1]
RAGVIGIL = str(Path(sys.executable).with_name("ragvigil"))


@pytest.fixture(scope="module")
def drilled(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path):  # type: ignore[no-untyped-def]
    """A development instance that can be drilled: (base url, admin key, the fake LLM)."""
    from tests.realservers import ragvigil_server

    data = tmp_path_factory.mktemp("drilled")
    with scripted_llm() as llm:
        env = {
            "RAGVIGIL_FAULTS__ENABLED": "true",
            "RAGVIGIL_PROVIDERS": json.dumps(
                [
                    {
                        "name": "llm",
                        "kind": "openai",
                        "base_url": llm.url,
                        "model": "scripted",
                        "timeout_s": 10,
                        # probed again soon after the fault is rolled back; a call of 2 s counts as slow, so
                        # llm-slow trips the breaker's slow-call rate within a short run
                        "breaker": {"open_s": 5, "slow_call_s": 2},
                    }
                ]
            ),
            "RAGVIGIL_LOG_LEVEL": "WARNING",
            # the drill is the load: per-key and per-user limits would answer it 429 (counted as shed),
            # and the steady-state probe too
            "RAGVIGIL_ADMISSION__PER_KEY": "off",
            "RAGVIGIL_ADMISSION__PER_USER": "off",
        }
        shutil.copytree(sample_data_dir, data, dirs_exist_ok=True)  # the help centre, embedded once per run
        with ragvigil_server(data, env=env) as server:
            key = (data / "admin.key").read_text().strip()
            yield server.base, key, llm, env | {"RAGVIGIL_DATA_DIR": str(data)}


def drill(name: str, drilled, *extra: str) -> dict:  # type: ignore[no-untyped-def]
    url, key, _, env = drilled
    out = subprocess.run(
        [RAGVIGIL, "drill", name, "--url", url, "--json", "--anonymous-users", "--fault-s", "8", *extra],
        env=os.environ | env | {"RAGVIGIL_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return json.loads(lines[-1])


def assert_drill_held(result: dict) -> None:
    """What every drill must show: nothing lost, nobody left without an answer or a Retry-After.

    Speed targets (a burst's admitted p95 and goodput) are the benchmark's to judge: on the suite's
    shared machine they say more about the neighbours than about ragvigil.
    """
    assert result["skipped"] is None, result
    assert result["requests"] > 0
    assert result["lost"] == 0 and result["duplicated"] == 0, result["problems"]
    assert result["failed"] == 0, result["problems"]
    assert result["answered"] + result["shed_503"] + result["rate_limited_429"] == result["requests"]
    assert result["mttd_s"] is not None, json.dumps(result, default=str)[-6000:]  # the alert fired
    assert result["time_to_action_s"] is not None and result["healing"], result["problems"]
    assert result["steady_state_restored"], json.dumps(result, indent=1, default=str)[-6000:]
    assert not [p for p in result["problems"] if p not in result["missed_targets"]], result["problems"]


def test_llm_outage_fails_over_to_extractive_and_recovers(drilled) -> None:  # type: ignore[no-untyped-def]
    result = drill("llm-outage", drilled)
    assert_drill_held(result)
    assert result["alert"] == "ProviderBreakerOpen"
    assert result["degraded"] > 0  # answered by the fallback while the provider was down
    assert "breaker of llm" in result["healing"]


def test_llm_slow_trips_the_slow_call_rate_and_fails_over(drilled) -> None:  # type: ignore[no-untyped-def]
    result = drill("llm-slow", drilled)
    assert_drill_held(result)
    assert result["alert"] == "ProviderBreakerOpen"  # opened by slow calls: none of them failed
    assert "breaker of llm" in result["healing"]
    injected = next(e for e in result["journal"] if e["event"] == "fault_injected")
    assert injected["params"]["delay_s"] > 2  # slower than the breaker's slow_call_s, or nothing trips
    assert result["degraded"] > 0  # answered by extractive once the breaker opened


def test_network_loss_fails_over_to_extractive_and_recovers(drilled) -> None:  # type: ignore[no-untyped-def]
    result = drill("network-loss", drilled)
    assert_drill_held(result)
    assert result["alert"] == "ProviderBreakerOpen"
    assert result["degraded"] > 0
    assert "breaker of llm" in result["healing"]


def test_vector_store_down_answers_from_bm25(drilled) -> None:  # type: ignore[no-untyped-def]
    result = drill("vector-store-down", drilled)
    assert_drill_held(result)
    assert result["alert"] in ("VectorStoreDown", "RetrievalDegraded")
    assert result["healing"] == "retrieval lexical_only"


def test_database_down_journals_and_loses_nothing(drilled) -> None:  # type: ignore[no-untyped-def]
    result = drill("database-down", drilled)
    assert_drill_held(result)
    assert result["answered"] > 0  # the journal took the turns the database could not


def test_burst_10x_sheds_with_retry_after_and_keeps_admitted_turns(drilled) -> None:  # type: ignore[no-untyped-def]
    result = drill("burst-10x", drilled)
    assert_drill_held(result)
    assert result["shed_503"] > 0  # ten times the capacity cannot all be admitted
    assert result["alert"] == "LoadShedding"
    assert "shed" in result["healing"]


def test_a_drill_that_does_not_apply_says_why(drilled) -> None:  # type: ignore[no-untyped-def]
    result = drill("redis-down", drilled)
    assert result["skipped"] == "Redis is not configured on this instance"
    assert result["passed"] is None


def test_every_drill_the_issue_names_exists() -> None:
    assert {
        "llm-outage",
        "llm-slow",
        "network-loss",
        "vector-store-down",
        "database-down",
        "redis-down",
        "burst-10x",
        "safety-filter",
    } <= set(DRILLS)


@pytest.fixture(scope="module")
def redis_drilled(sample_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An instance with Redis configured (a real redis-server): (base url, admin key, the server, env)."""
    import shutil

    from tests.realservers import ServerUnavailable, ragvigil_server, redis_server

    data = tmp_path_factory.mktemp("redis-drilled") / "data"
    shutil.copytree(sample_data_dir, data)
    try:
        with redis_server() as srv:
            env = {
                "RAGVIGIL_FAULTS__ENABLED": "true",
                "RAGVIGIL_REDIS__URL": srv.url,
                "RAGVIGIL_LOG_LEVEL": "WARNING",
                # counted in Redis on every request, but far above what the drill sends
                "RAGVIGIL_ADMISSION__PER_KEY": "100000/minute",
                "RAGVIGIL_ADMISSION__PER_USER": "off",
            }
            with ragvigil_server(data, env=env) as server:
                key = (data / "admin.key").read_text().strip()
                yield server.base, key, srv, env | {"RAGVIGIL_DATA_DIR": str(data)}
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"redis-server not available: {exc}")


def test_redis_down_answers_every_request_locally_and_shares_again(redis_drilled) -> None:  # type: ignore[no-untyped-def]
    import httpx

    result = drill("redis-down", redis_drilled)
    assert_drill_held(result)
    assert result["alert"] == "RedisDown"
    assert result["healing"] == "rate limits, breakers and cache local"
    assert result["shed_503"] == 0 and result["rate_limited_429"] == 0  # Redis down refuses nobody
    url, key, _, _ = redis_drilled
    headers = {"Authorization": f"Bearer {key}"}
    details: dict = {}
    for _ in range(40):  # the fault is rolled back: the link's next probe finds Redis again
        details = httpx.get(url + "/health", headers=headers, timeout=10).json()["checks"]["redis"]["details"]
        if details["limits"] == "shared":
            break
        time.sleep(0.25)
    assert details["limits"] == "shared", details
