"""Cost of observability: the same chat load with instrumentation on and off, in one run.

``instrumentation`` (env ``RAGVIGIL_INSTRUMENTATION``, or ``PUT /api/v1/ops/instrumentation`` at run
time) switches the Prometheus metrics of the request
middleware and the pipeline stages, the OpenTelemetry spans and the per-request / per-stage log lines
on or off. This script measures what they cost in server CPU per request.

What it does (everything on 127.0.0.1, in a temp data dir, stops by itself):
  1. ``ragvigil ingest samples/helpcentre --vectors`` into a temp data dir;
  2. starts one ``ragvigil serve`` (staging profile with ``RAGVIGIL_AUTH_REQUIRED=false``: the
     production profile refuses to start without an admin key; staging has production's INFO log level
     and JSON log lines, to stdout and ``data/logs``) and warms it with the 40 popular questions and a
     short load burst; the switch is flipped between phases with ``PUT /api/v1/ops/instrumentation``,
     so both settings run in the same process with the same caches (two processes side by side
     differed by up to 10 % in CPU per request on this shared machine, more than the effect measured);
  3. for each workload, sends a fixed number of POST /api/v1/chat requests at ``--clients`` (10)
     closed-loop clients, alternating the setting: on, off, off, on, on, off, ... (``--rounds`` pairs,
     the order flipped every round so that going first or second cannot favour one setting). Phases
     are short (~2 s) and many (20 + 12 pairs): on this shared VM the CPU per request of two adjacent
     phases with the same setting differs by 5-10 %, more than the effect measured, and only many
     close pairs average that out. Only one setting is measured at a time. Within a round both
     phases get the same repeated questions in the same order (same seed) and as many fresh ones
     (different texts: the cache would answer repeats);
  4. the server runs pinned to core 0 and the load generator to core 1 (``taskset``; ``--no-pin`` to
     let them float): sharing a core with the load generator or not is the largest source of noise
     in CPU per request on a 2-core machine;
  5. per phase: the server's CPU time (psutil ``cpu_times`` of its pid, user + system, before and
     after) divided by the completed requests, and the client-side p50/p95 latency and req/s;
  6. direct: the instrumented code alone, in this process — the request middleware around an app that
     runs four empty pipeline stages and sends a response, the access line going through the real
     handlers (a stdout file and data/logs, written in batches as in the server) — on vs off,
     ``--direct-requests`` times each, the log writer's work included. It has none
     of the noise of a shared machine, and says how much of the end-to-end difference is the code itself.

Workloads: "repeats" (``--repeat-share`` 95% popular questions, answered from the query-embedding
cache, so the request CPU is mostly Python and the instrumentation share is visible) and "mixed"
(50% fresh questions, each one e5 embedding). The load generator, the question stream and the
server wrapper are those of ``chat.py``.

  7. side by side (the target): two servers, each with its own copy of the data, both pinned to core 0,
     each driven by its own load generator with the same questions at the same time; one is switched
     on, the other off, and the roles swap every round (``--pair-rounds`` 24, ``--mixed-pair-rounds``
     16). CPU and answers are read over a window (``--pair-window`` 8 s) while both are loaded. The
     sequential rounds of step 3 scatter by tens of per cent on this shared VM (the core's speed
     changes from one second to the next); side by side, whatever slows the core slows both alike and
     rounds scatter by a few per cent. A constant difference between the two processes (measured at
     ~1-2 %) shows as a gap between the A-on and B-on rounds and cancels in their mean.

Target: overhead = (CPU/request on − CPU/request off) / CPU/request on < 3 %, per workload, as the
mean of the side-by-side rounds (equal numbers of A-on and B-on), with a 95 % bootstrap interval over
AB/BA blocks. The sequential rounds (median, its interval, pooled value, spread) and the direct
in-process measurement (step 6: what the code itself costs) are printed next to it.

    .venv/bin/python bench/overhead.py            # ~13 minutes (the ingest takes 13-40 s)
    .venv/bin/python bench/overhead.py --quick    # ~4 minutes
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from _common import Report, Row, console, empty_config, exit_on_sigterm, free_port, machine_line, temp_data_dir
from chat import SAMPLES, QuestionStream, Server, describe, ingest_samples, ragvigil_server, run_loadgen

MODES = ("on", "off")
TARGET_PCT = 3.0


@dataclass
class Instance:
    """The ``ragvigil serve`` under test."""

    server: Server
    port: int
    proc: psutil.Process
    data_dir: Path

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


def median_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap confidence interval of the median of ``values``."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


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


def start_instance(data_dir: Path, base_env: dict[str, str], tmp: Path, pin: bool) -> Instance:
    port = free_port()
    env = {**base_env, "RAGVIGIL_DATA_DIR": str(data_dir), "RAGVIGIL_INSTRUMENTATION": "true"}
    server = ragvigil_server(env, tmp, port, pin=pin)
    return Instance(server, port, psutil.Process(server.proc.pid), data_dir)


def switch(inst: Instance, mode: str) -> None:
    """Instrumentation on or off in the running server (the operator's switch)."""
    import httpx

    key = (inst.data_dir / "admin.key").read_text().strip()  # ops routes need a key; the first start made it
    r = httpx.put(
        f"{inst.base}/api/v1/ops/instrumentation",
        json={"enabled": mode == "on"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    r.raise_for_status()


def warm_up(inst: Instance, args: argparse.Namespace) -> None:
    """Popular questions into the query cache, then a short repeat-only burst (thread pool, SQLite pages)."""
    import httpx

    with httpx.Client(base_url=inst.base, timeout=60) as http:
        for q in QuestionStream(0, 1.0).popular:
            http.post("/api/v1/chat", json={"message": q}).raise_for_status()
    run_loadgen(load_spec(inst, args, 1.0, args.warmup, seed=args.seed - 1, fresh_start=0))


def load_spec(
    inst: Instance,
    args: argparse.Namespace,
    repeat_share: float,
    duration: float,
    seed: int,
    fresh_start: int,
    requests: int | None = None,
) -> dict:
    """A load phase: ``requests`` requests (duration only as a safety cap), or as many as fit in ``duration``."""
    return {
        "host": "127.0.0.1",
        "port": inst.port,
        "path": "/api/v1/chat",
        "chat": True,
        "concurrency": args.clients,
        "duration_s": duration,
        "max_requests": requests or args.max_requests,
        "timeout_s": args.timeout,
        "seed": seed,
        "repeat_share": repeat_share,
        "fresh_start": fresh_start,
        "cpus": [1] if args.pin else None,
    }


def run_phase(inst: Instance, spec: dict) -> dict:
    """One load phase against one server, with the server's CPU seconds over it."""
    cpu0 = inst.cpu_s()
    r = run_loadgen(spec)
    r["server_cpu_s"] = inst.cpu_s() - cpu0
    r["server_cpu_ms"] = 1000 * r["server_cpu_s"] / max(1, r["ok"])
    return r


def answers_counted(inst: Instance) -> float:
    """ragvigil_chat_answers_total, summed: counted whether instrumentation is on or off."""
    import httpx

    text = httpx.get(f"{inst.base}/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(r"^ragvigil_chat_answers_total\{[^}]*\} (\S+)$", text, re.M))


def side_by_side_round(
    pair: tuple[Instance, Instance], on_first: bool, args: argparse.Namespace, share: float, seed: int, fresh: int
) -> tuple[dict[str, float], int]:
    """Both servers on the same core under the same load at the same time, one on and one off.

    Whatever slows the core (another tenant, frequency) slows both alike; CPU and answers are read
    inside a window where both are loaded, so neither runs alone at the edges. Returns CPU ms per
    answer by setting, and the fresh questions used.
    """
    from concurrent.futures import ThreadPoolExecutor

    modes = ("on", "off") if on_first else ("off", "on")
    for inst, m in zip(pair, modes, strict=True):
        switch(inst, m)
    total = args.pair_warm + args.pair_window + args.pair_warm
    specs = [load_spec(inst, args, share, total, seed, fresh, 10**7) for inst in pair]  # the same questions
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run_loadgen, spec) for spec in specs]
        time.sleep(args.pair_warm + 0.5)  # both load generators started and running
        before = [(inst.cpu_s(), answers_counted(inst)) for inst in pair]
        time.sleep(args.pair_window)
        after = [(inst.cpu_s(), answers_counted(inst)) for inst in pair]
        results = [f.result() for f in futures]
    cost = {m: 1000 * (a[0] - b[0]) / max(1.0, a[1] - b[1]) for m, b, a in zip(modes, before, after, strict=True)}
    return cost, max(r["fresh_used"] for r in results)


def crossover_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the mean, resampling whole AB/BA blocks so both orders stay balanced."""
    blocks = [values[i : i + 2] for i in range(0, len(values) - 1, 2)] or [values]
    rng = random.Random(seed)
    means = sorted(
        statistics.fmean([x for b in rng.choices(blocks, k=len(blocks)) for x in b]) for _ in range(resamples)
    )
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def run_side_by_side(
    data_dirs: tuple[Path, Path], base_env: dict[str, str], tmp: Path, args: argparse.Namespace, workloads: list
) -> dict[str, list[dict[str, float]]]:
    """Two servers on core 0 under the same load, one on and one off, roles swapped every round."""
    pair: list[Instance] = []
    out: dict[str, list[dict[str, float]]] = {}
    try:
        for i, d in enumerate(data_dirs):
            sub = tmp / f"pair-{'ab'[i]}"
            sub.mkdir()
            pair.append(start_instance(d, base_env, sub, args.pin))
        for inst in pair:
            inst.server.wait_ready(f"{inst.base}/health/ready", 120)
        for inst in pair:
            warm_up(inst, args)
        side_by_side_round((pair[0], pair[1]), True, args, workloads[0][1], args.seed - 3, 10**6)  # discarded
        fresh = 0
        for w, (name, share, _, _, rounds) in enumerate(workloads):
            out[name] = []
            for rnd in range(rounds):
                a_on = rnd % 2 == 0  # A on / B off, then B on / A off: a difference between the processes cancels
                cost, used = side_by_side_round(
                    (pair[0], pair[1]), a_on, args, share, args.seed + 500 + 100 * w + rnd, fresh
                )
                fresh += used
                cost["a_on"] = float(a_on)
                out[name].append(cost)
                console.print(
                    f"  side by side {name} r{rnd + 1} ({'A' if a_on else 'B'} on): on {cost['on']:.2f} / "
                    f"off {cost['off']:.2f} CPU-ms per answer, {overhead_pct(cost['on'], cost['off']):.1f} %"
                )
    finally:
        for inst in pair:
            inst.server.stop()
    return out


def add_side_by_side_row(report: Report, sec: str, rounds: list[dict[str, float]]) -> float:
    per_round = [overhead_pct(r["on"], r["off"]) for r in rounds]
    mean = statistics.fmean(per_round)
    low, high = crossover_ci(per_round)
    by_order = [statistics.fmean([o for o, r in zip(per_round, rounds, strict=True) if r["a_on"] == k]) for k in (1, 0)]
    on_ms = statistics.fmean(r["on"] for r in rounds)
    off_ms = statistics.fmean(r["off"] for r in rounds)
    report.add(
        Row(
            sec,
            "side by side: overhead (on − off) / on, CPU per answer, mean over AB/BA rounds",
            mean,
            "%",
            digits=1,
            target=f"< {TARGET_PCT:.0f} %",
            passed=mean < TARGET_PCT,
            ratio=None,
            note=f"95 % CI {low:.1f} … {high:.1f} % ({len(rounds)} rounds, bootstrap over AB/BA blocks); "
            f"median {statistics.median(per_round):.1f} %; A on {by_order[0]:.1f} %, B on {by_order[1]:.1f} % "
            f"(their gap is the difference between the two processes, cancelled by the swap); "
            f"on {on_ms:.2f} / off {off_ms:.2f} ms a request, {1000 * (on_ms - off_ms):.0f} µs",
        )
    )
    return mean


def direct_cost_us(requests: int, log_dir: Path) -> dict[str, float]:
    """CPU µs per request of the middleware and stage wrappers around an empty app, on and off."""
    import asyncio
    import logging

    from ragvigil.api.middleware import RequestContextMiddleware
    from ragvigil.chat.observers import default_observers, listening
    from ragvigil.chat.pipeline import BaseStage, Turn, finish_turn, run_stage
    from ragvigil.config import Settings
    from ragvigil.ops import instrumentation
    from ragvigil.ops.logging import configure_logging

    class Route:
        path = "/api/v1/chat"

    class Empty(BaseStage):
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, turn: Turn) -> None:
            return None

    stages = [Empty(name) for name in ("history", "retrieve", "generate", "persist")]
    observers = default_observers()
    stage_observers, turn_observers = listening(observers, "stage_finished"), listening(observers, "turn_finished")

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        scope["route"] = Route
        turn = Turn(message="direct", kb="default")
        for stage in stages:
            with run_stage(stage, turn, stage_observers):
                stage(turn)
        finish_turn(turn, turn_observers)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: dict) -> None:
        return None

    middleware = RequestContextMiddleware(app, 1_000_000)
    scope = {"type": "http", "method": "POST", "path": "/api/v1/chat", "headers": [(b"content-length", b"2")]}

    async def serve(n: int) -> None:
        for _ in range(n):
            await middleware(dict(scope), receive, send)

    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "stdout.log").open("w") as stdout:
        configure_logging("INFO", log_dir, True, stdout, Settings().log_flush_interval)  # as `ragvigil serve`
        root = logging.getLogger()
        cost: dict[str, list[float]] = {m: [] for m in MODES}
        try:
            for _ in range(3):
                for m in MODES:
                    instrumentation.configure(m == "on")
                    t = time.process_time()  # all threads: the log writer's work counts
                    asyncio.run(serve(requests))
                    for h in root.handlers:
                        h.flush()
                    cost[m].append(1e6 * (time.process_time() - t) / requests)
        finally:
            instrumentation.configure(True)
            configure_logging("WARNING", None, True, sys.stderr)
    return {m: min(v) for m, v in cost.items()}


def idle_cpu_ms_per_s(inst: Instance, seconds: float) -> float:
    """Background CPU of the idle server (alert evaluation, vector filler, journal replay), ms per second."""
    before = inst.cpu_s()
    time.sleep(seconds)
    return 1000 * (inst.cpu_s() - before) / seconds


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
            note=f"sum of server CPU / requests over {len(on.phases)} phases each",
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
    pooled = overhead_pct(on.cpu_ms, off.cpu_ms)
    per_round = [
        overhead_pct(a["server_cpu_ms"], b["server_cpu_ms"]) for a, b in zip(on.phases, off.phases, strict=True)
    ]
    median = statistics.median(per_round)
    low, high = median_ci(per_round)
    q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else [median] * 3
    spread = []
    for t in (on, off):
        vals = [p["server_cpu_ms"] for p in t.phases]
        if len(vals) > 1:
            spread.append(100 * (max(vals) - min(vals)) / (sum(vals) / len(vals)))
    noise = f"; same-setting spread between rounds up to {max(spread):.0f} %" if spread else ""
    report.add(
        Row(
            sec,
            "sequential: overhead (on − off) / on, CPU per request, median of the paired rounds",
            median,
            "%",
            digits=1,
            ratio=None,
            note=f"95 % CI of the median {low:.1f} … {high:.1f} % ({len(per_round)} rounds, bootstrap); "
            f"rounds min / quartiles / max {min(per_round):.1f} / {q[0]:.1f}, {q[1]:.1f}, {q[2]:.1f} / "
            f"{max(per_round):.1f} %; pooled over all rounds {pooled:.1f} % "
            f"({1000 * (on.cpu_ms - off.cpu_ms):.0f} µs a request)" + noise,
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10, help="concurrent closed-loop clients")
    ap.add_argument("--rounds", type=int, default=20, help="sequential on/off pairs of the repeats workload")
    ap.add_argument("--requests", type=int, default=300, help="requests per phase of the repeats workload")
    ap.add_argument("--mixed-rounds", type=int, default=12, help="sequential on/off pairs of the mixed workload")
    ap.add_argument("--mixed-requests", type=int, default=120, help="requests per phase of the mixed workload")
    ap.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin servers to core 0 and the load to core 1"
    )
    ap.add_argument("--pair-rounds", type=int, default=24, help="side-by-side rounds, repeats workload")
    ap.add_argument("--mixed-pair-rounds", type=int, default=16, help="side-by-side rounds, mixed workload")
    ap.add_argument("--pair-window", type=float, default=8.0, help="seconds measured per side-by-side round")
    ap.add_argument("--pair-warm", type=float, default=1.5, help="seconds of load before and after the window")
    ap.add_argument("--direct-requests", type=int, default=20_000, help="requests of the in-process measurement")
    ap.add_argument("--phase-cap", type=float, default=120.0, help="seconds a phase may take at most")
    ap.add_argument("--repeat-share", type=float, default=0.95, help="repeated popular questions, repeats workload")
    ap.add_argument("--mixed-repeat-share", type=float, default=0.5, help="repeated popular questions, mixed workload")
    ap.add_argument("--no-mixed", dest="mixed", action="store_false", help="skip the mixed workload")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of repeat-only load per server before measuring")
    ap.add_argument("--max-requests", type=int, default=50_000, help="cap of the warm-up burst")
    ap.add_argument("--ingest-threads", type=int, default=2, help="e5 threads for ingesting the samples")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="a few rounds of each kind (about 4 minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir (logs, databases)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    args.pin = args.pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if args.quick:
        args.rounds, args.mixed_rounds, args.pair_rounds, args.mixed_pair_rounds, args.warmup = 4, 2, 6, 4, 1.5
    t_start = time.perf_counter()
    console.print(f"[bold]ragvigil instrumentation overhead benchmark[/bold] — {machine_line()}")
    workloads = [("repeats", args.repeat_share, args.requests, args.rounds, args.pair_rounds)]
    if args.mixed:
        workloads.append(
            ("mixed", args.mixed_repeat_share, args.mixed_requests, args.mixed_rounds, args.mixed_pair_rounds)
        )
    report = Report(
        f"instrumentation overhead: POST /api/v1/chat, {args.clients} clients, on vs off "
        f"(measured = on, baseline = off, ratio = on / off)"
    )

    with temp_data_dir("overhead", keep=args.keep) as tmp:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVIGIL_")}
        base_env.update(
            RAGVIGIL_PROFILE="staging",
            RAGVIGIL_AUTH_REQUIRED="false",
            RAGVIGIL_CONFIG_FILE=str(empty_config(tmp)),  # ignore any ./ragvigil.toml
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
        pair_dirs = (tmp / "pair-a-data", tmp / "pair-b-data")
        for d in pair_dirs:
            shutil.copytree(seed_dir, d)

        # 2. one server; the switch is flipped between phases through PUT /api/v1/ops/instrumentation,
        #    so both settings run in the same process, on the same core, with the same caches
        inst: Instance | None = None
        try:
            t = time.perf_counter()
            inst = start_instance(seed_dir, base_env, tmp, args.pin)
            inst.server.wait_ready(f"{inst.base}/health/ready", 120)
            t_ready = time.perf_counter() - t
            warm_up(inst, args)
            # one discarded phase per setting, shaped like the first measured one: the first phase after
            # start-up ran 5-10 % more CPU per request than the later ones (allocator, SQLite pages, caches)
            _, share0, requests0, _, _ = workloads[0]
            for m in MODES:
                switch(inst, m)
                run_phase(inst, load_spec(inst, args, share0, args.phase_cap, args.seed - 2, 10**6, 3 * requests0))
            switch(inst, "on")
            idle = idle_cpu_ms_per_s(inst, 2.0)
            import httpx

            counted_before = chat_requests_counted(httpx.get(f"{inst.base}/metrics", timeout=10).text)
            console.print(
                f"  server ready in {t_ready:.1f} s, warm after {time.perf_counter() - t:.1f} s; idle CPU {idle:.0f} ms/s"
            )

            # 3. alternate: on, off | off, on | ... Both phases of a round draw the same question stream
            #    (same seed: the same repeated questions in the same order); the fresh questions differ
            #    (the query cache would otherwise answer the second phase's), in equal number.
            fresh_start = 0
            results: dict[str, dict[str, Totals]] = {}
            sent = dict.fromkeys(MODES, 0)
            for w, (name, share, requests, rounds, _) in enumerate(workloads):
                results[name] = {m: Totals() for m in MODES}
                for rnd in range(rounds):
                    seed = args.seed + 100 * w + rnd
                    for m in MODES if rnd % 2 == 0 else MODES[::-1]:  # on-off, off-on, ...: order cancels
                        switch(inst, m)
                        r = run_phase(inst, load_spec(inst, args, share, args.phase_cap, seed, fresh_start, requests))
                        results[name][m].add(r)
                        sent[m] += r["ok"] + r["n_errors"]
                        fresh_start += r["fresh_used"]
                        errs = r["errors"] or 0
                        console.print(
                            f"  {name} r{rnd + 1} {m:>3}: {r['ok']} ok, {r['rps']:.1f} req/s, {describe(r)}, "
                            f"server {r['server_cpu_ms']:.2f} CPU-ms/req, "
                            f"{r['kinds'].get('repeat', 0) / max(1, r['ok']):.0%} repeats, errors {errs}"
                        )

            # sanity: exactly the requests served while on were counted in /metrics
            switch(inst, "on")
            counted = chat_requests_counted(httpx.get(f"{inst.base}/metrics", timeout=10).text) - counted_before
            if counted != sent["on"]:
                console.print(f"[red]switch not effective: {counted:.0f} counted, {sent} sent[/red]")
        finally:
            if inst is not None:
                inst.server.stop()
            if args.keep:
                console.print(f"[dim]server log: {tmp}/server.log[/dim]")
        console.print("side by side: two servers on one core, the same load at the same time, one on, one off...")
        pairs = run_side_by_side(pair_dirs, base_env, tmp, args, workloads)

    for name, share, _, _, _ in workloads:
        sec = f"{name}: {share:.0%} repeated"
        if pairs[name]:
            add_side_by_side_row(report, sec, pairs[name])
        add_workload_rows(report, sec, results[name]["on"], results[name]["off"])
    console.print(f"direct measurement: {args.direct_requests} requests per setting, 3 times, in this process...")
    with temp_data_dir("overhead-direct", keep=False) as tmp:
        direct = direct_cost_us(args.direct_requests, tmp / "logs")
    extra_us = direct["on"] - direct["off"]
    for name, share, _, _, _ in workloads:
        on_ms = results[name]["on"].cpu_ms
        report.add(
            Row(
                f"direct: {name}",
                "instrumented code alone, CPU per request",
                extra_us,
                "µs",
                digits=0,
                display=f"{extra_us:.0f} µs = {extra_us / (10 * on_ms):.1f} % of {on_ms:.2f} ms",
                baseline_name="empty app, off",
                baseline=direct["off"],
                ratio=None,
                note="middleware + 4 stage wrappers + 1 access line, in-process, best of 3; "
                f"as a share of the {share:.0%}-repeated request's CPU (on) measured above",
            )
        )
    report.note(
        "Server: one `ragvigil serve`, staging profile with RAGVIGIL_AUTH_REQUIRED=false (production refuses to "
        "start without an admin key), INFO JSON log lines to stdout (a file here) and data/logs/application.log, "
        "extractive generator, SQLite, 1 e5 thread; "
        + ("server pinned to core 0, load generator to core 1." if args.pin else "not pinned to cores.")
    )
    report.note(
        f"Order: on/off pairs, the order flipped every round, {args.rounds} (repeats) and {args.mixed_rounds} "
        "(mixed) rounds, the switch flipped "
        f"between phases (PUT /api/v1/ops/instrumentation); idle CPU {idle:.0f} ms/s; "
        "CPU = psutil user+system of the server pid over the phase / completed requests."
    )
    report.note(
        f"Switch check: chat requests counted in /metrics during the measured phases {counted:.0f}; "
        f"sent while on {sent['on']}, while off {sent['off']}."
    )
    report.note(
        "Side by side (the target): two `ragvigil serve` processes, both pinned to core 0, each with its own "
        f"copy of the data and its own load generator (same questions, {args.clients} clients each, core 1), "
        "one switched on and one off; CPU and answers (ragvigil_chat_answers_total, counted either way) are read "
        f"over a {args.pair_window:.0f} s window while both are loaded. Whatever slows the core slows both "
        "alike, so rounds scatter by a few per cent instead of tens; the roles swap every round."
    )
    report.note(
        "Not switched off: a few unconditional counters (retrieval hits, chat answers, LLM calls, "
        "query-cache hits, vector-store ops), so 'off' still pays those: about 1.6 µs each, ~10 µs a request."
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return report.finish(t_start, args.json, f"; load avg at the end {load}")


if __name__ == "__main__":
    sys.exit(main())
