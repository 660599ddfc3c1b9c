"""Cost of observability: the same chat load with instrumentation on and off, in one run.

``instrumentation`` (env ``RAGVIGIL_INSTRUMENTATION``) switches the Prometheus metrics of the request
middleware and the pipeline stages, the OpenTelemetry spans and the per-request / per-stage log lines
on or off. This script measures what they cost in server CPU per request.

What it does (everything on 127.0.0.1, in a temp data dir, stops by itself):
  1. ``ragvigil ingest samples/helpcentre --vectors`` once, then copies the data dir, so both servers
     start from the same content;
  2. starts two ``ragvigil serve`` processes side by side (staging profile with
     ``RAGVIGIL_AUTH_REQUIRED=false``: the production profile refuses to start without an admin key;
     staging has production's INFO log level and JSON log lines, to stdout and ``data/logs``), one with
     ``RAGVIGIL_INSTRUMENTATION=true``, one with ``false``; warms both with the 40 popular questions and
     a short load burst;
  3. for each workload, runs POST /api/v1/chat at ``--clients`` (10) closed-loop clients for a fixed
     duration, alternating the servers: on, off, on, off, ... (``--rounds`` 4 pairs; many short phases
     average out the drift of a shared machine better than a few long ones). Only one server is loaded
     at a time; the other idles. Within a round both servers get the same question stream;
  4. per phase: the loaded server's CPU time (psutil ``cpu_times`` of its pid, user + system, before and
     after) divided by the completed requests, and the client-side p50/p95 latency and req/s.

Workloads: "repeats" (``--repeat-share`` 95% popular questions, answered from the query-embedding
cache, so the request CPU is mostly Python and the instrumentation share is visible) and "mixed"
(50% fresh questions, each one e5 embedding). The load generator, the question stream and the
server wrapper are those of ``chat.py``.

Target: overhead = (CPU/request on − CPU/request off) / CPU/request on < 3 %, per workload, on the
CPU pooled over the rounds (sum of CPU seconds / sum of requests); the per-round values, their median
and the spread between rounds of the same setting are in the notes, to judge the noise.

    .venv/bin/python bench/overhead.py            # ~2.5-3.5 minutes (the ingest takes 13-40 s)
    .venv/bin/python bench/overhead.py --quick    # ~60-90 s (2 rounds of short phases)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from _common import Report, Row, console, exit_on_sigterm, free_port, machine_line, temp_data_dir
from chat import SAMPLES, QuestionStream, Server, describe, ingest_samples, run_loadgen

MODES = ("on", "off")
TARGET_PCT = 3.0


@dataclass
class Instance:
    """One ``ragvigil serve`` with instrumentation on or off."""

    mode: str
    server: Server
    port: int
    proc: psutil.Process

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system


@dataclass
class Totals:
    """Sums over the phases of one (workload, mode)."""

    ok: int = 0
    errors: int = 0
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    phases: list[dict] = field(default_factory=list)

    def add(self, r: dict) -> None:
        self.ok += r["ok"]
        self.errors += r["n_errors"]
        self.cpu_s += r["server_cpu_s"]
        self.elapsed_s += r["elapsed_s"]
        self.phases.append(r)

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / max(1, self.ok)

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else float("nan")

    def mean_lat(self, key: str) -> float:
        return sum(p["lat"][key] for p in self.phases) / max(1, len(self.phases))


def overhead_pct(on_ms: float, off_ms: float) -> float:
    return 100.0 * (on_ms - off_ms) / on_ms if on_ms else float("nan")


def chat_requests_counted(metrics_text: str) -> float:
    """Sum of ragvigil_http_requests_total for the chat route (0 when instrumentation is off)."""
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^ragvigil_http_requests_total\{[^}]*route="/api/v1/chat"[^}]*\} (\S+)$', metrics_text, re.M
        )
    )


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def start_instance(mode: str, data_dir: Path, base_env: dict[str, str], tmp: Path) -> Instance:
    port = free_port()
    env = {
        **base_env,
        "RAGVIGIL_DATA_DIR": str(data_dir),
        "RAGVIGIL_INSTRUMENTATION": "true" if mode == "on" else "false",
    }
    server = Server(
        f"ragvigil serve (instrumentation {mode})",
        [sys.executable, "-m", "ragvigil.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp,
        tmp / f"server-{mode}.log",
    )
    return Instance(mode, server, port, psutil.Process(server.proc.pid))


def warm_up(inst: Instance, args: argparse.Namespace) -> None:
    """Popular questions into the query cache, then a short repeat-only burst (thread pool, SQLite pages)."""
    import httpx

    with httpx.Client(base_url=inst.base, timeout=60) as http:
        for q in QuestionStream(0, 1.0).popular:
            http.post("/api/v1/chat", json={"message": q}).raise_for_status()
    run_loadgen(load_spec(inst, args, 1.0, args.warmup, seed=args.seed - 1, fresh_start=0))


def load_spec(
    inst: Instance, args: argparse.Namespace, repeat_share: float, duration: float, seed: int, fresh_start: int
) -> dict:
    return {
        "host": "127.0.0.1",
        "port": inst.port,
        "path": "/api/v1/chat",
        "chat": True,
        "concurrency": args.clients,
        "duration_s": duration,
        "max_requests": args.max_requests,
        "timeout_s": args.timeout,
        "seed": seed,
        "repeat_share": repeat_share,
        "fresh_start": fresh_start,
    }


def run_phase(inst: Instance, spec: dict) -> dict:
    """One load phase against one server, with the server's CPU seconds over it."""
    cpu0 = inst.cpu_s()
    r = run_loadgen(spec)
    r["server_cpu_s"] = inst.cpu_s() - cpu0
    r["server_cpu_ms"] = 1000 * r["server_cpu_s"] / max(1, r["ok"])
    return r


def idle_cpu_ms_per_s(instances: list[Instance], seconds: float) -> dict[str, float]:
    """Background CPU of each idle server (vector filler, journal replay), ms per second."""
    before = {i.mode: i.cpu_s() for i in instances}
    time.sleep(seconds)
    return {i.mode: 1000 * (i.cpu_s() - before[i.mode]) / seconds for i in instances}


def add_workload_rows(report: Report, sec: str, on: Totals, off: Totals) -> None:
    report.add(
        Row(
            sec,
            "server CPU per request",
            on.cpu_ms,
            "ms",
            digits=2,
            display=f"on {on.cpu_ms:.2f} ms",
            baseline_name="instrumentation off",
            baseline=off.cpu_ms,
            note="per phase (ms): "
            + "; ".join(
                f"r{i + 1} on {a['server_cpu_ms']:.2f} / off {b['server_cpu_ms']:.2f}"
                for i, (a, b) in enumerate(zip(on.phases, off.phases, strict=True))
            ),
        )
    )
    report.add(
        Row(
            sec,
            "latency p50 / p95 (client side)",
            on.mean_lat("p95"),
            "ms",
            display=f"on {on.mean_lat('p50'):.1f} / {on.mean_lat('p95'):.1f} ms",
            baseline_name=f"off p95 (p50 {off.mean_lat('p50'):.1f})",
            baseline=off.mean_lat("p95"),
            note="mean of the per-phase percentiles",
        )
    )
    report.add(
        Row(
            sec,
            "throughput",
            on.rps,
            "req/s",
            display=f"on {on.rps:.1f} req/s",
            baseline_name="off",
            baseline=off.rps,
            note=f"{on.ok} / {off.ok} requests ok, {on.errors} / {off.errors} errors (on / off)",
        )
    )
    pct = overhead_pct(on.cpu_ms, off.cpu_ms)
    per_round = [
        overhead_pct(a["server_cpu_ms"], b["server_cpu_ms"]) for a, b in zip(on.phases, off.phases, strict=True)
    ]
    spread = []
    for t in (on, off):
        vals = [p["server_cpu_ms"] for p in t.phases]
        if len(vals) > 1:
            spread.append(100 * (max(vals) - min(vals)) / (sum(vals) / len(vals)))
    noise = f"; same-setting spread between rounds up to {max(spread):.0f} %" if spread else ""
    report.add(
        Row(
            sec,
            "overhead (on − off) / on, CPU per request",
            pct,
            "%",
            digits=1,
            target=f"< {TARGET_PCT:.0f} %",
            passed=pct < TARGET_PCT,
            ratio=None,
            note=f"{1000 * (on.cpu_ms - off.cpu_ms):.0f} µs CPU per request; per round: "
            + ", ".join(f"{x:.1f}" for x in per_round)
            + f" % (median {statistics.median(per_round):.1f} %)"
            + noise,
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10, help="concurrent closed-loop clients")
    ap.add_argument("--rounds", type=int, default=4, help="on/off pairs per workload (on, off, on, off, ...)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase of the repeats workload")
    ap.add_argument("--mixed-duration", type=float, default=7.0, help="seconds per phase of the mixed workload")
    ap.add_argument("--repeat-share", type=float, default=0.95, help="repeated popular questions, repeats workload")
    ap.add_argument("--mixed-repeat-share", type=float, default=0.5, help="repeated popular questions, mixed workload")
    ap.add_argument("--no-mixed", dest="mixed", action="store_false", help="skip the mixed workload")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of repeat-only load per server before measuring")
    ap.add_argument("--max-requests", type=int, default=50_000, help="cap per phase")
    ap.add_argument("--ingest-threads", type=int, default=2, help="e5 threads for ingesting the samples")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="2 rounds of short phases (about 60-90 s in all)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir (logs, databases)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    if args.quick:
        args.rounds, args.duration, args.mixed_duration, args.warmup = 2, 6.0, 3.5, 1.5
    t_start = time.perf_counter()
    console.print(f"[bold]ragvigil instrumentation overhead benchmark[/bold] — {machine_line()}")
    workloads = [("repeats", args.repeat_share, args.duration)]
    if args.mixed:
        workloads.append(("mixed", args.mixed_repeat_share, args.mixed_duration))
    report = Report(
        f"instrumentation overhead: POST /api/v1/chat, {args.clients} clients, on vs off "
        f"(measured = on, baseline = off, ratio = on / off)"
    )

    with temp_data_dir("overhead", keep=args.keep) as tmp:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVIGIL_")}
        base_env.update(
            RAGVIGIL_PROFILE="staging",
            RAGVIGIL_AUTH_REQUIRED="false",
            RAGVIGIL_CONFIG_FILE=str(tmp / "no-config.toml"),  # ignore any ./ragvigil.toml
            PYTHONUNBUFFERED="1",
        )

        # 1. one ingest, copied for both servers
        seed_dir = tmp / "seed-data"
        console.print(f"ingesting {SAMPLES} with vectors ({args.ingest_threads} e5 threads)...")
        ingest_samples(
            {
                **base_env,
                "RAGVIGIL_DATA_DIR": str(seed_dir),
                "RAGVIGIL_RETRIEVAL__EMBED_THREADS": str(args.ingest_threads),
            },
            tmp,
        )
        shutil.rmtree(seed_dir / "logs", ignore_errors=True)
        dirs = {m: tmp / f"data-{m}" for m in MODES}
        for d in dirs.values():
            shutil.copytree(seed_dir, d)

        # 2. both servers, started together (model loading overlaps)
        instances: list[Instance] = []
        try:
            t = time.perf_counter()
            for m in MODES:
                instances.append(start_instance(m, dirs[m], base_env, tmp))
            for inst in instances:
                inst.server.wait_ready(f"{inst.base}/health/ready", 120)
            t_ready = time.perf_counter() - t
            with ThreadPoolExecutor(len(instances)) as pool:  # both at once: the first questions embed
                list(pool.map(lambda i: warm_up(i, args), instances))
            idle = idle_cpu_ms_per_s(instances, 2.0)
            console.print(
                f"  both servers ready in {t_ready:.1f} s, warm after {time.perf_counter() - t:.1f} s; idle CPU "
                + ", ".join(f"{m} {v:.0f} ms/s" for m, v in idle.items())
            )
            by_mode = {m: i for m, i in zip(MODES, instances, strict=True)}

            # 3. alternate: on, off, on, off (same question stream within a round)
            fresh_start = 0
            results: dict[str, dict[str, Totals]] = {}
            for w, (name, share, duration) in enumerate(workloads):
                results[name] = {m: Totals() for m in MODES}
                for rnd in range(args.rounds):
                    seed = args.seed + 100 * w + rnd
                    used = 0
                    for m in MODES:
                        r = run_phase(by_mode[m], load_spec(by_mode[m], args, share, duration, seed, fresh_start))
                        results[name][m].add(r)
                        used = max(used, r["fresh_used"])
                        errs = r["errors"] or 0
                        console.print(
                            f"  {name} r{rnd + 1} {m:>3}: {r['ok']} ok, {r['rps']:.1f} req/s, {describe(r)}, "
                            f"server {r['server_cpu_ms']:.2f} CPU-ms/req, "
                            f"{r['kinds'].get('repeat', 0) / max(1, r['ok']):.0%} repeats, errors {errs}"
                        )
                    fresh_start += used

            # sanity: the switch really is on in one server and off in the other
            import httpx

            counted = {
                i.mode: chat_requests_counted(httpx.get(f"{i.base}/metrics", timeout=10).text) for i in instances
            }
            log_lines = {m: count_lines(dirs[m] / "logs" / "application.log") for m in MODES}
            if counted["on"] == 0 or counted["off"] != 0:
                console.print(f"[red]instrumentation switch not effective: chat requests counted {counted}[/red]")
        finally:
            for inst in instances:
                inst.server.stop()
            if args.keep:
                console.print(f"[dim]server logs: {tmp}/server-on.log, {tmp}/server-off.log[/dim]")

    for name, share, _ in workloads:
        add_workload_rows(report, f"{name}: {share:.0%} repeated", results[name]["on"], results[name]["off"])
    report.note(
        "Servers: `ragvigil serve` x2, staging profile with RAGVIGIL_AUTH_REQUIRED=false (production refuses to "
        "start without an admin key), INFO JSON log lines to stdout (a file here) and data/logs/application.log, "
        "extractive generator, SQLite, 1 e5 thread; identical copies of one ingested data dir."
    )
    report.note(
        f"Order: on, off alternated {args.rounds}× per workload, one server loaded at a time (the other idles: "
        + ", ".join(f"{m} {v:.0f} ms/s" for m, v in idle.items())
        + ", 10 ms clock ticks); CPU = psutil user+system of the server pid over the phase / completed requests."
    )
    report.note(
        f"Switch check: chat requests in /metrics on {counted['on']:.0f}, off {counted['off']:.0f}; "
        f"application.log lines on {log_lines['on']}, off {log_lines['off']}."
    )
    report.note(
        "Not switched off: a few unconditional counters (retrieval hits, chat answers, LLM calls, "
        "query-cache hits, vector-store ops), so 'off' still pays those."
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return report.finish(t_start, args.json, f"; load avg at the end {load}")


if __name__ == "__main__":
    sys.exit(main())
