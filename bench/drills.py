"""Fault drills benchmark: every drill against one real instance, next to the seeds' targets.

What it does (everything on 127.0.0.1, in a temp data dir, stops by itself):
  1. a scripted OpenAI-compatible endpoint on loopback (the remote LLM: answers at once);
  2. ``ragvigil ingest samples/helpcentre``, then ``ragvigil serve`` with fault injection on and that
     endpoint as its one remote provider (breaker: slow calls from 2 s, open for 5 s), sharing its rate
     limits, breakers and query cache through a real ``redis-server`` when one is installed
     (``--no-redis``: without; redis-down is then skipped);
  3. the extractive path's p95 with no fault (the provider's breaker forced open by the operator
     API): the baseline the LLM-hang target is measured against, in the same run;
  4. every drill of ``ragvigil.ops.drills`` (llm-outage, llm-slow, network-loss, vector-store-down,
     database-down, redis-down, burst-10x, safety-filter) with ``--fault-s`` seconds of traffic each.

Targets (the seeds ask: alert within 10 s, failover within 30 s; the issue tightens them): 0 lost in
every drill; MTTD ≤ 5 s for P1 faults; with the LLM endpoint hanging, once the breaker is open the p95
of answered turns is within 1.5× of the no-fault extractive p95; under burst-10x the admitted turns'
p95 < 2 s and goodput ≥ 90 % of the capacity measured before the burst.

    .venv/bin/python bench/drills.py            # ~6 minutes
    .venv/bin/python bench/drills.py --quick    # ~3 minutes (shorter faults)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO_ROOT, Report, Row, console, exit_on_sigterm, free_port, machine_line, temp_data_dir
from chat import ragvigil_server

sys.path.insert(0, str(REPO_ROOT))

P1_DRILLS = {"llm-outage", "network-loss", "vector-store-down", "database-down"}
SEED_TARGETS = {"mttd_s": 10.0, "mttr_s": 30.0}


def extractive_p95_ms(client, seconds: float) -> float | None:  # type: ignore[no-untyped-def]
    """The no-fault p95 of the extractive path: the remote provider's breaker forced open meanwhile.

    Driven by as many closed-loop users as ``llm-slow`` uses, so both p95s are measured under the same load,
    after a warm-up (a cold instance's first answers fill its caches: they are not the extractive path's cost).
    """
    from ragvigil.ops.drills.catalog import SLOW_USERS
    from ragvigil.ops.drills.experiment import p95_ms
    from ragvigil.ops.drills.traffic import Users, closed_loop

    client._http.put("/api/v1/ops/providers/llm/breaker", json={"state": "open"}).raise_for_status()
    try:
        closed_loop(Users(client, SLOW_USERS, "bench-warm"), 3.0, 2000)  # first answers fill the caches
        traffic = closed_loop(Users(client, SLOW_USERS, "bench-extractive"), seconds, 2000)
    finally:
        client._http.put("/api/v1/ops/providers/llm/breaker", json={"state": "auto"}).raise_for_status()
    return p95_ms(traffic.snapshot())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter faults (8 s instead of 20 s)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--only", help="comma-separated drill names (default: every drill)")
    ap.add_argument("--no-redis", action="store_true", help="no redis-server (redis-down is then skipped)")
    ap.add_argument(
        "--nice", type=int, default=10, help="niceness of this process once the instance runs (0: compete with it)"
    )
    args = ap.parse_args(argv)
    exit_on_sigterm()
    started = time.perf_counter()
    from tests.realservers import ServerUnavailable, redis_server
    from tests.slow_llm import scripted_llm

    from ragvigil.ops.drills import DRILLS, DrillOptions, InstanceClient, run

    fault_s = 8.0 if args.quick else 20.0
    report = Report("ragvigil fault drills")
    with contextlib.ExitStack() as stack:
        llm = stack.enter_context(scripted_llm())
        data = stack.enter_context(temp_data_dir("drills"))
        redis_url = ""
        if not args.no_redis:
            try:  # a real redis-server: the shared state redis-down breaks (skipped without one)
                redis_url = stack.enter_context(redis_server()).url
            except ServerUnavailable as exc:
                report.note(f"redis-down skipped: {exc}")
        port = free_port()
        provider = {
            "name": "llm",
            "kind": "openai",
            "base_url": llm.url,
            "model": "scripted",
            "timeout_s": 10,
            "breaker": {"open_s": 5, "slow_call_s": 2},
        }
        env = os.environ | {
            "RAGVIGIL_DATA_DIR": str(data),
            "RAGVIGIL_FAULTS__ENABLED": "true",
            "RAGVIGIL_PROVIDERS": json.dumps([provider]),
            "RAGVIGIL_LOG_LEVEL": "WARNING",
            # the drills are the load: a limit far above what they send (counted in Redis when it is there)
            "RAGVIGIL_ADMISSION__PER_KEY": "1000000/minute" if redis_url else "off",
            "RAGVIGIL_ADMISSION__PER_USER": "off",
            "RAGVIGIL_REDIS__URL": redis_url,
        }
        cli = [sys.executable, "-m", "ragvigil.cli"]
        subprocess.run([*cli, "ingest", str(REPO_ROOT / "samples" / "helpcentre")], env=env, check=True, timeout=900)
        server = ragvigil_server(env, data, port)
        if args.nice:
            # the instance is started: from here on this process (the synthetic users of every phase, the
            # scripted LLM) yields the CPU to it, as clients on other machines would not compete for it
            os.nice(args.nice)
        try:
            base = f"http://127.0.0.1:{port}"
            server.wait_ready(f"{base}/health/ready", 180)
            key = (data / "admin.key").read_text().strip()
            client = InstanceClient(base, key)
            baseline = extractive_p95_ms(client, 6.0 if args.quick else 15.0)
            report.add(
                Row("baseline", "extractive path p95, no fault", baseline, "ms", note="breaker forced open, 8 users")
            )
            opts = DrillOptions(fault_s=fault_s, max_requests=2000, detect_timeout_s=30.0, settle_timeout_s=45.0)
            cost = alert_cost(client)
            for name in args.only.split(",") if args.only else DRILLS:
                r = run(name, client, opts)
                console.print(f"[dim]{name}: {json.dumps(r.as_dict(), default=str)[:300]}[/dim]")
                add_rows(report, r, baseline, P1_DRILLS)
            add_alert_cost(report, cost, alert_cost(client))
            client.close()
        finally:
            server.stop()
    report.note(machine_line())
    report.note(f"load generator at niceness +{args.nice} (the instance at 0)" if args.nice else "load generator at 0")
    return report.finish(started, args.json)


def alert_cost(client) -> tuple[float, float, float] | None:  # type: ignore[no-untyped-def]
    """(now, seconds spent evaluating, cycles) read from the instance's own metrics."""
    spent = client.metric("ragvigil_alert_evaluation_duration_seconds_sum")
    cycles = client.metric("ragvigil_alert_evaluation_duration_seconds_count")
    return None if spent is None or cycles is None else (time.monotonic(), spent, cycles)


def add_alert_cost(report: Report, start, end) -> None:  # type: ignore[no-untyped-def]
    """The alert loop's cost over the drills (every P1 group each second): per cycle and per second."""
    if not start or not end or end[2] <= start[2]:
        return
    wall, spent, cycles = end[0] - start[0], end[1] - start[1], end[2] - start[2]
    report.add(
        Row(
            "alerting",
            "evaluation per cycle / per second",
            1000 * spent / cycles,
            "ms",
            digits=2,
            display=f"{1000 * spent / cycles:.2f} ms / {1000 * spent / wall:.2f} ms",
            note=f"wall time (GIL waits included), {cycles:.0f} cycles in {wall:.0f} s of drills ({spent / wall:.2%})",
        )
    )


def add_rows(report: Report, r, baseline: float | None, p1: set[str]) -> None:  # type: ignore[no-untyped-def]
    sec = r.drill
    if r.skipped:
        report.add(Row(sec, "skipped", None, display="—", note=r.skipped))
        return
    answered = 100.0 * r.answered / r.requests if r.requests else None
    report.add(
        Row(
            sec,
            "answered / degraded / shed / lost",
            answered,
            "%",
            display=f"{answered:.1f} % / {r.degraded} / {r.shed_503 + r.rate_limited_429} / {r.lost}"
            if answered is not None
            else "—",
            target="0 lost",
            passed=r.lost == 0 and r.failed == 0,
            note=f"{r.requests} requests, {r.failed} failed",
        )
    )
    if getattr(r, "backup_s", None) is not None or sec == "backup-restore":
        # no fault, no alert: what it measures is a backup taken while users chat, restored and verified
        report.add(
            Row(
                sec,
                "backup / verified restore",
                r.backup_s,
                "s",
                display=f"{r.backup_s} s / {r.verify_s} s" if r.backup_s is not None else "—",
                target="verified, 0 failed",
                passed=bool(r.passed),
                note=r.healing or "; ".join(r.problems) or "",
            )
        )
        return
    is_p1 = sec in p1
    limit = 5.0 if is_p1 else SEED_TARGETS["mttd_s"]
    report.add(
        Row(
            sec,
            "MTTD",
            r.mttd_s,
            "s",
            target="≤ 5 s (P1)" if is_p1 else "≤ 10 s (seeds)",
            passed=r.mttd_s is not None and r.mttd_s <= limit,
            note=r.alert or "no alert",
        )
    )
    report.add(Row(sec, "time to action", r.time_to_action_s, "s", note=r.healing or ""))
    report.add(
        Row(
            sec,
            "MTTR (users hurt until)",
            r.mttr_s,
            "s",
            target="≤ 30 s (seeds)",
            passed=r.mttr_s is not None and r.mttr_s <= SEED_TARGETS["mttr_s"],
            note=f"steady again {r.steady_again_s} s after rollback" if r.steady_state_restored else "not steady",
        )
    )
    after = r.p95_ms.get("after_action")
    if sec == "llm-slow":
        seen = next((e for e in r.journal if e.get("event") == "after_action"), {})
        report.add(
            Row(
                sec,
                "answered p95 once the breaker is open",
                after,
                "ms",
                target="≤ 1.5× extractive",
                passed=bool(after is not None and baseline and after <= 1.5 * baseline),
                baseline_name="extractive p95, no fault",
                baseline=baseline,
                note=f"{seen.get('answered', 0)} turns answered after {r.healing}"
                if r.healing
                else "the breaker never opened",
            )
        )
    if sec == "burst-10x":
        j = next((e for e in r.journal if e.get("event") == "burst_measured"), {})
        for phase in ("admission_before", "admission_after"):
            e = next((e for e in r.journal if e.get("event") == phase), {})
            report.note(
                f"burst-10x {phase}: " + ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("event", "t_s"))
            )
        lat = next((e for e in r.journal if e.get("event") == "burst_latency_ms"), {})
        if lat:
            report.note(
                "burst-10x latency (ms): " + ", ".join(f"{k} {v}" for k, v in lat.items() if k not in ("event", "t_s"))
            )
        for phase in ("capacity_measured", "burst_done"):
            e = next((e for e in r.journal if e.get("event") == phase), {})
            share = f"instance {e.get('instance_cpu_share', '?')} / generator {e.get('generator_cpu_share', '?')} cores"
            report.note(f"burst-10x {phase.split('_')[0]}: {share}")
        cap, good = j.get("capacity_per_s"), j.get("goodput_per_s")
        adm = r.p95_ms.get("admitted")
        report.add(Row(sec, "admitted p95", adm, "ms", target="< 2000 ms", passed=adm is not None and adm < 2000))
        report.add(
            Row(
                sec,
                "goodput during the burst",
                good,
                "/s",
                target="≥ 90 % of capacity",
                passed=bool(cap and good is not None and good >= 0.9 * cap),
                baseline_name="capacity before",
                baseline=cap,
            )
        )


if __name__ == "__main__":
    raise SystemExit(main())
