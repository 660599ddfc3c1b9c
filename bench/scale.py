"""Scaled-topology benchmark: one replica vs two behind nginx, and Redis-backed shared state vs in-process.

What it does (everything on 127.0.0.1, real processes from ``tests/topology.py``, stops by itself):
  1. the topology: PostgreSQL, Redis, Chroma, two ``ragvigil serve`` replicas, the sample help centre
     ingested once, nginx with the committed site file in front of both; a second nginx, the same site
     file, in front of replica 1 alone; a third replica with the same settings but no ``redis.url``
     (rate-limit counters, breaker states and the query cache in process), addressed directly;
  2. at each concurrency level, closed-loop POST /api/v1/chat (``bench/chat.py``'s load generator, its
     question stream) through the one-replica nginx, then through the two-replica nginx: req/s, p95,
     errors, and how many turns each replica answered (``ragvigil_http_requests_total`` of its /metrics);
  3. fresh questions (every one embedded, none cached) straight to replica 1 (Redis) and to the
     in-process replica, one after the other, each warmed first with ``--warmup`` seconds of the same
     load: server CPU per turn and p50/p95, and their ratio.

On 2 cores two replicas cannot double throughput: they share the cores the one replica already used.
What the numbers must show is that nothing regresses (req/s not lower, p95 not higher beyond noise,
no errors) and that nginx spreads the load over both replicas.

    .venv/bin/python bench/scale.py --quick   # ~2.5 minutes (most of it the topology's start)
    .venv/bin/python bench/scale.py           # ~4 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from _common import REPO_ROOT, Report, Row, console, exit_on_sigterm, machine_line
from chat import proc_cpu_s, run_loadgen

sys.path.insert(0, str(REPO_ROOT))  # the topology lives with the tests
from tests.topology import REDIS_FREE, Replica, Topology, nginx_server, topology

CHAT_ROUTE = "/api/v1/chat"


def chat_turns(base: str) -> float:
    """Chat turns a replica answered 200 so far (its own counter)."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "ragvigil_http_requests_total"
        and s.labels.get("route") == CHAT_ROUTE
        and s.labels.get("method") == "POST"
        and s.labels.get("status") == "200"
    )


def load(args: argparse.Namespace, base: str, c: int, fresh_start: int, repeat_share: float) -> dict:
    host, port = base.removeprefix("http://").split(":")
    spec = {
        "host": host,
        "port": int(port),
        "path": CHAT_ROUTE,
        "chat": True,
        "concurrency": c,
        "duration_s": args.duration,
        "max_requests": args.max_requests,
        "timeout_s": 60,
        "seed": args.seed + c,
        "repeat_share": repeat_share,
        "fresh_start": fresh_start,
    }
    return run_loadgen(spec)


def spread_level(args: argparse.Namespace, report: Report, topo: Topology, one: str, c: int, n: int) -> None:
    """One concurrency level through nginx: one replica, then two; the same question stream."""
    r1, r2 = topo.replicas
    results = {}
    for label, base in (("1 replica", one), ("2 replicas", topo.nginx)):
        before = [chat_turns(r.url) for r in (r1, r2)]
        res = load(args, base, c, fresh_start=n, repeat_share=args.repeat_share)
        after = [chat_turns(r.url) for r in (r1, r2)]
        res["per_replica"] = [int(a - b) for a, b in zip(after, before, strict=True)]
        results[label] = res
        console.print(
            f"  c={c} {label}: {res['rps']:.1f} req/s, p95 {res['lat']['p95']:.0f} ms, "
            f"errors {res['errors'] or 0}, turns per replica {res['per_replica']}"
        )
    one_r, two_r = results["1 replica"], results["2 replicas"]
    section = f"c={c}"
    report.add(
        Row(section, "throughput, 2 replicas", two_r["rps"], " req/s", baseline_name="1 replica", baseline=one_r["rps"])
    )
    report.add(
        Row(
            section,
            "p95, 2 replicas",
            two_r["lat"]["p95"],
            " ms",
            baseline_name="1 replica",
            baseline=one_r["lat"]["p95"],
            digits=0,
        )
    )
    report.add(
        Row(
            section,
            "errors, 2 replicas",
            two_r["n_errors"],
            target="0",
            passed=two_r["n_errors"] == 0,
            baseline_name="1 replica",
            baseline=one_r["n_errors"],
            digits=0,
            note=", ".join(f"{k} {v}" for k, v in two_r["errors"].items()),
        )
    )
    share = min(two_r["per_replica"]) / max(1, sum(two_r["per_replica"]))
    report.add(
        Row(
            section,
            "share of the smaller replica",
            100 * share,
            " %",
            target="≥ 30 %",
            passed=share >= 0.3,
            note=f"turns per replica {two_r['per_replica']}",
            digits=0,
        )
    )


def shared_state(args: argparse.Namespace, report: Report, redis_backed: Replica, local: Replica) -> None:
    """Fresh questions straight to one replica with Redis and one without: CPU per turn, latency."""
    rows = {}
    warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
    for replica, start in ((redis_backed, 700_000), (local, 800_000)):  # the new replica is cold: warm both
        load(warm, replica.url, args.state_concurrency, fresh_start=start, repeat_share=0.0)
    for label, replica, start in (("Redis", redis_backed, 500_000), ("in process", local, 600_000)):
        cpu0 = proc_cpu_s(replica.proc.pid) if replica.proc else None
        res = load(args, replica.url, args.state_concurrency, fresh_start=start, repeat_share=0.0)
        cpu1 = proc_cpu_s(replica.proc.pid) if replica.proc else None
        res["cpu_ms"] = None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / max(1, res["ok"])
        rows[label] = res
        console.print(
            f"  {label}: {res['rps']:.1f} req/s, p50 {res['lat']['p50']:.0f} / p95 {res['lat']['p95']:.0f} ms, "
            f"server CPU {res['cpu_ms'] or 0:.1f} ms/turn, errors {res['errors'] or 0}"
        )
    redis, mem = rows["Redis"], rows["in process"]
    section = f"shared state, c={args.state_concurrency}"
    report.add(
        Row(
            section,
            "server CPU per turn, Redis",
            redis["cpu_ms"],
            " ms",
            baseline_name="in process",
            baseline=mem["cpu_ms"],
            note="limits, breaker states and the query-embedding cache in Redis",
        )
    )
    report.add(
        Row(section, "p50, Redis", redis["lat"]["p50"], " ms", baseline_name="in process", baseline=mem["lat"]["p50"])
    )
    report.add(
        Row(section, "p95, Redis", redis["lat"]["p95"], " ms", baseline_name="in process", baseline=mem["lat"]["p95"])
    )
    report.add(
        Row(
            section,
            "errors, Redis",
            redis["n_errors"],
            target="0",
            passed=redis["n_errors"] == 0 and mem["n_errors"] == 0,
            baseline_name="in process",
            baseline=mem["n_errors"],
            digits=0,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one concurrency level, 10 s each")
    parser.add_argument("--levels", default="4,16", help="concurrency levels, comma-separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--max-requests", type=int, default=20_000, help="bound per measurement")
    parser.add_argument("--repeat-share", type=float, default=0.5, help="share of repeated popular questions")
    parser.add_argument("--state-concurrency", type=int, default=4, help="clients in the shared-state comparison")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load on each replica first")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.duration = "8", 10.0
    levels = [int(x) for x in args.levels.split(",")]
    exit_on_sigterm()
    started = time.perf_counter()
    console.print(f"[bold]ragvigil scaled-topology benchmark[/bold] — {machine_line()}")
    report = Report("one vs two replicas behind nginx; Redis-backed vs in-process shared state (same run)")
    console.print("starting the topology (PostgreSQL, Redis, Chroma, 2 replicas, nginx, Prometheus)...")
    with topology() as topo, contextlib.ExitStack() as stack:
        console.print(f"  started: {topo.phases}")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rv-scale-")))
        # the site file names two servers: both lines point at replica 1 here
        one = stack.enter_context(nginx_server([topo.replicas[0].address] * 2, tmp / "nginx-one"))
        local = topo.add_replica("local", without=REDIS_FREE)
        for n, c in enumerate(levels):
            spread_level(args, report, topo, one, c, 100_000 * (n + 1))
        shared_state(args, report, topo.replicas[0], local)
    report.note(
        "2 replicas share the 2 cores one replica already had: the target is no regression and a spread load, "
        "not double throughput"
    )
    report.note("the load generator, nginx, PostgreSQL, Redis and Chroma run on the same cores")
    return report.finish(started, args.json)


if __name__ == "__main__":
    sys.exit(main())
