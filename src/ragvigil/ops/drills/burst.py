"""``burst-10x``: ten times the measured capacity, all at once; admitted turns must keep their latency.

The capacity is measured first, in the same run, by closed-loop users (answers per second). The
burst then starts requests at ten times that rate whatever the answers (open loop). The instance
passes when every request was answered or shed with ``Retry-After`` (fast, not after a timeout), the
admitted turns' p95 stays under the target, and goodput during the burst stays at 90 % or more of the
capacity — shedding must protect the work it admits, not queue everything into timeouts.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from ragvigil.ops.drills.client import InstanceClient, TurnOutcome
from ragvigil.ops.drills.experiment import (
    DrillOptions,
    DrillResult,
    DrillSpec,
    Watcher,
    begin,
    count_stored,
    judge,
    p95_ms,
    tally,
    wait_steady,
)
from ragvigil.ops.drills.traffic import Users, closed_loop, open_loop

ADMITTED_P95_TARGET_MS = 2000.0
GOODPUT_TARGET = 0.9
WARMUP_S = 1.5


def _limiter(client: InstanceClient) -> dict[str, object]:
    """The adaptive limit's state as the instance reports it (what the burst met, what it left)."""
    a = client.admission()
    keys = ("limit", "short_rtt_s", "window_rtt_s", "long_rtt_s", "windows", "shed")
    return {k: a[k] for k in keys if k in a}


class CpuMeter:
    """CPU seconds of the instance (its ``process_cpu_seconds_total``) and of this load generator, per phase.

    On a small machine the generator competes with the instance for the same cores; the journal shows how much.
    """

    def __init__(self, client: InstanceClient) -> None:
        self.client = client
        self.server, self.local = client.metric("process_cpu_seconds_total"), time.process_time()

    def lap(self, seconds: float) -> dict[str, float]:
        server, local = self.client.metric("process_cpu_seconds_total"), time.process_time()
        out = {"generator_cpu_share": round((local - self.local) / max(seconds, 1e-3), 2)}
        if server is not None and self.server is not None:
            out["instance_cpu_share"] = round((server - self.server) / max(seconds, 1e-3), 2)
        self.server, self.local = server, local
        return out


def _ms(values: list[float], q: float) -> float | None:
    return round(sorted(values)[int(q * (len(values) - 1))] * 1000, 1) if values else None


def latency_by_third(admitted: list[TurnOutcome], shed: list[TurnOutcome], started: float) -> dict[str, object]:
    """Admitted and shed latencies (p50/p95/max), and the admitted p95 by the third of the burst a request
    was sent in: whether the tail comes from the first seconds (the limit still wide) or from later."""
    out: dict[str, object] = {}
    for name, group in (("admitted", admitted), ("shed", shed)):
        lat = [o.latency_s for o in group]
        out[name] = {"p50": _ms(lat, 0.5), "p95": _ms(lat, 0.95), "max": _ms(lat, 1.0)}
    if admitted:
        span = max(o.sent_at for o in admitted) - started or 1e-3
        thirds: list[list[float]] = [[], [], []]
        for o in admitted:
            thirds[min(2, int(3 * (o.sent_at - started) / span))].append(o.latency_s)
        out["admitted_p95_by_third"] = [_ms(t, 0.95) for t in thirds]
    return out


def run_burst(client: InstanceClient, spec: DrillSpec, opts: DrillOptions, factor: float = 10.0) -> DrillResult:
    result, log, before = begin(client, spec)
    if result.problems:
        return result
    users = max(opts.users, 8)
    # warm up first (the first answers fill the query-embedding cache): capacity is what a warm instance does
    warm = closed_loop(Users(client, users, f"drill-{spec.name}-warm"), WARMUP_S, opts.max_requests).snapshot()
    cpu = CpuMeter(client)
    t = time.monotonic()
    base = closed_loop(Users(client, users, f"drill-{spec.name}-base"), opts.baseline_s, opts.max_requests).snapshot()
    took = max(time.monotonic() - t, 1e-3)
    capacity = sum(o.answered for o in base) / took
    result.p95_ms["before"] = p95_ms(base)
    log("capacity_measured", answers_per_s=round(capacity, 2), users=users, **cpu.lap(took))
    if capacity <= 0:
        result.problems.append("nothing was answered while measuring capacity")
        return result
    log("admission_before", **_limiter(client))
    watcher = Watcher(client, spec, time.monotonic(), datetime.now(UTC))
    watcher.start()
    rate = capacity * factor
    started = time.monotonic()
    burst = open_loop(Users(client, users * 4, f"drill-{spec.name}"), rate, opts.fault_s, opts.max_requests)
    ended = max(o.sent_at + o.latency_s for o in burst.snapshot()) if burst.outcomes else time.monotonic()
    log("burst_done", rate_per_s=round(rate, 2), requests=len(burst.outcomes), **cpu.lap(time.monotonic() - started))
    log("admission_after", **_limiter(client))
    deadline = started + opts.detect_timeout_s
    while watcher.detected_at is None and time.monotonic() < deadline:
        time.sleep(0.25)
    watcher.stop.set()
    during = burst.snapshot()
    admitted = [o for o in during if o.answered]
    shed = [o for o in during if o.shed]
    goodput = len(admitted) / max(ended - started, 1e-3)
    result.p95_ms["admitted"] = p95_ms(during)
    result.p95_ms["shed"] = (
        round(sorted(o.latency_s for o in shed)[int(0.95 * (len(shed) - 1))] * 1000, 1) if shed else None
    )
    result.mttr_s = 0.0
    if watcher.detected_at is not None:
        result.mttd_s = round(watcher.detected_at - started, 3)
        result.alert = watcher.alert
    if watcher.healed_at is not None:  # the instance's own answer to the burst (shedding, features off)
        result.healing, result.time_to_action_s = watcher.healing, round(watcher.healed_at - started, 3)
    result.steady_state_restored, took = wait_steady(client, before, opts.settle_timeout_s)
    result.steady_again_s = round(took, 3)
    tally(result, warm + base + during)
    result.lost, result.duplicated = count_stored(client, warm + base + during, opts.settle_timeout_s)
    result.journal.append(
        {"event": "burst_measured", "capacity_per_s": round(capacity, 2), "goodput_per_s": round(goodput, 2)}
    )
    result.journal.append({"event": "burst_latency_ms", **latency_by_third(admitted, shed, started)})
    judge(result, spec)
    if not shed:
        # nothing shed: the instance absorbed the burst, so no shedding alert is expected either
        result.problems = [p for p in result.problems if "fired" not in p]
    admitted_p95 = result.p95_ms["admitted"]
    if admitted_p95 is not None and admitted_p95 > ADMITTED_P95_TARGET_MS:
        result.missed_targets.append(f"admitted p95 {admitted_p95:.0f} ms over {ADMITTED_P95_TARGET_MS:.0f} ms")
    if goodput < GOODPUT_TARGET * capacity:
        result.missed_targets.append(f"goodput {goodput:.1f}/s under {GOODPUT_TARGET:.0%} of capacity {capacity:.1f}/s")
    result.problems.extend(result.missed_targets)
    result.passed = not result.problems
    return result
