"""Alerting benchmark: evaluation cost per cycle, and time from a fault to the notification.

What it does (everything on 127.0.0.1, in temp dirs, stops by itself):
  1. evaluation cost: a signal history shaped like a busy ragvigil (15 minutes at the 3 s sampling
     interval: HTTP counters and latency histograms for 20 routes x 4 statuses, health, LLM and cache
     series), and rule sets of 10, 100 and 1,000 rules made from the default pack's expressions with
     varied thresholds; the median time of one evaluation cycle (every rule once) is compared with
     the evaluation interval it must fit in (3 s);
  2. fault to notification: one ``ragvigil serve`` (development profile, no ingest needed) with a
     webhook channel pointing at a receiver in this process; Prometheus (scrape 1 s) evaluates the
     exported rules (every 1 s) and Alertmanager (P1 group_wait 0 s) delivers to a second receiver.
     For each trial the vector index directory is replaced by a file (the vector store check fails),
     and the time until each receiver gets the VectorStoreDown notification is measured; then the
     fault is undone and both resolutions are awaited. The built-in engine samples every 3 s.

Targets: a P1 condition is notified within 10 s of its onset by the built-in engine; 1,000 rules
evaluate within one evaluation interval (3 s). The Prometheus + Alertmanager path is reported
alongside (its speed is set by its scrape and evaluation intervals, here 1 s each).

    .venv/bin/python bench/alerts.py            # ~2 minutes
    .venv/bin/python bench/alerts.py --quick    # ~1 minute (1 fault trial, fewer cycles)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _common import REPO_ROOT, Report, Row, console, exit_on_sigterm, free_port, machine_line, temp_data_dir
from chat import ragvigil_server

sys.path.insert(0, str(REPO_ROOT / "tests"))

EVAL_INTERVAL_S = 3.0


# --- 1. evaluation cost --------------------------------------------------------------------------
def busy_history(minutes: int = 15, step: float = 3.0):  # type: ignore[no-untyped-def]
    from ragvigil.ops.alerts.history import SignalHistory

    h = SignalHistory(retention_s=minutes * 60 + 600)
    rng = random.Random(3)
    routes = [f"/api/v1/r{i}" for i in range(18)] + ["/api/v1/chat", "/v1/chat/completions"]
    buckets = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf")
    counters: dict[tuple, float] = {}
    t0 = time.time() - minutes * 60
    for i in range(int(minutes * 60 / step)):
        samples = []
        for route in routes:
            for status in ("200", "404", "422", "500"):
                key = ("ragvigil_http_requests_total", route, status)
                counters[key] = counters.get(key, 0) + rng.randint(0, 30 if status == "200" else 2)
                samples.append((key[0], {"route": route, "method": "POST", "status": status}, counters[key]))
            below = 0.0
            for le in buckets:  # cumulative: a bucket holds at least what the one below it holds
                key = ("bucket", route, le)
                below = counters[key] = max(counters.get(key, 0) + rng.randint(0, 5), below)
                samples.append(
                    (
                        "ragvigil_http_request_duration_seconds_bucket",
                        {"route": route, "method": "POST", "le": le},
                        below,
                    )
                )
            for suffix in ("_sum", "_count"):
                key = (suffix, route)
                counters[key] = counters.get(key, 0) + rng.random() * 10
                samples.append(
                    (
                        f"ragvigil_http_request_duration_seconds{suffix}",
                        {"route": route, "method": "POST"},
                        counters[key],
                    )
                )
        for check in ("database", "vector_store", "embedding", "generator", "disk"):
            samples.append(("ragvigil_health_check_up", {"check": check}, 1.0))
        for comp in ("chat", "retrieval", "generation", "persistence"):
            samples.append(("ragvigil_health_status", {"component": comp}, 0.0))
        for provider in ("openai", "backup"):
            for outcome in ("ok", "timeout", "error"):
                key = ("llm", provider, outcome)
                counters[key] = counters.get(key, 0) + rng.randint(0, 5 if outcome == "ok" else 1)
                samples.append(
                    (
                        "ragvigil_llm_requests_total",
                        {"provider": provider, "model": "m", "outcome": outcome},
                        counters[key],
                    )
                )
        for result in ("hit", "miss"):
            key = ("cache", result)
            counters[key] = counters.get(key, 0) + rng.randint(0, 10)
            samples.append(
                ("ragvigil_cache_requests_total", {"cache": "query_embedding", "result": result}, counters[key])
            )
        for kind in ("answered", "no_answer"):
            key = ("answers", kind)
            counters[key] = counters.get(key, 0) + rng.randint(0, 10)
            samples.append(("ragvigil_chat_answers_total", {"kind": kind, "degraded": "false"}, counters[key]))
        for name, value in (
            ("ragvigil_host_cpu_utilization_ratio", rng.random()),
            ("ragvigil_host_memory_used_ratio", 0.5),
            ("ragvigil_data_disk_used_ratio", 0.4),
            ("ragvigil_journal_pending_turns", 0.0),
            ("ragvigil_alert_last_evaluation_timestamp_seconds", t0 + i * step),
        ):
            samples.append((name, {}, value))
        h.add(t0 + i * step, samples)
    return h, t0 + (int(minutes * 60 / step) - 1) * step


def rule_set(n: int):  # type: ignore[no-untyped-def]
    """``n`` rules: the default pack's expressions again and again, thresholds and names varied."""
    import re

    from ragvigil.ops.alerts.rules import default_rules, load_rules

    base = [r for r in default_rules().rules if "time()" not in r.spec.expr]
    rules = []
    for i in range(n):
        r = base[i % len(base)]
        expr = re.sub(
            r"([<>]=?) ?([0-9.]+)\s*$",
            lambda m, i=i: f"{m.group(1)} {float(m.group(2)) * (1 + (i % 7) / 10):g}",
            r.spec.expr.strip(),
        )
        rules.append({"alert": f"{r.name}{i}", "expr": expr, "for": "1m", "labels": {"severity": r.severity}})
    return load_rules(json.dumps({"groups": [{"name": "bench", "rules": rules}]}))


def evaluation_cost(report: Report, cycles: int) -> None:
    from ragvigil.ops.alerts.engine import AlertEngine

    t = time.perf_counter()
    history, now = busy_history()
    console.print(
        f"  history: {history.series_count} series, 300 samples each, built in {time.perf_counter() - t:.1f} s"
    )
    for n in (10, 100, 1000):
        engine = AlertEngine(rule_set(n), history)
        engine.evaluate(now)  # warm
        times = []
        for c in range(cycles):
            start = time.perf_counter()
            engine.evaluate(now + c * 0.001)
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        errors = sum(1 for h in engine.rule_health() if h["health"] == "error")
        report.add(
            Row(
                "evaluation cost",
                f"{n} rules, one cycle (median of {cycles})",
                med * 1000,
                "ms",
                target="< 3,000 ms" if n == 1000 else "",
                passed=(med < EVAL_INTERVAL_S) if n == 1000 else None,
                baseline_name="evaluation interval",
                baseline=EVAL_INTERVAL_S * 1000,
                note=f"{med / n * 1e6:.0f} µs a rule; p95 {sorted(times)[int(0.95 * (len(times) - 1))] * 1000:.1f} ms; "
                f"{errors} rules in error",
            )
        )
        console.print(f"  {n} rules: {med * 1000:.1f} ms a cycle")


# --- 2. fault to notification -------------------------------------------------------------------
class Inbox:
    """A webhook receiver that notes when each (alertname, status) first arrived."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], float] = {}
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                now = time.monotonic()
                for a in body.get("alerts", []):
                    inbox.first.setdefault((a["labels"].get("alertname", ""), a["status"]), now)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, key: tuple[str, str], since: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.first.get(key)
            if at is not None and at >= since:
                return at - since
            time.sleep(0.05)
        return None

    def reset(self) -> None:
        self.first.clear()


def fault_to_notification(report: Report, trials: int, tmp: Path) -> None:
    from ragvigil.ops.alerts.export import to_alertmanager, to_prometheus
    from ragvigil.ops.alerts.rules import default_rules
    from realservers import alertmanager_server, prometheus_server

    builtin, via_am = Inbox(), Inbox()
    port = free_port()
    data = tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVIGIL_")}
    env.update(
        RAGVIGIL_DATA_DIR=str(data),
        RAGVIGIL_CONFIG_FILE=str(tmp / "none.toml"),
        RAGVIGIL_ALERTS__CHANNELS=json.dumps([{"name": "bench", "type": "webhook", "url": builtin.url}]),
        PYTHONUNBUFFERED="1",
    )
    server = ragvigil_server(env, tmp, port)
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(f"{base}/health/ready", 120)
        prom_cfg = f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [ragvigil.rules.yml]
alerting: {{alertmanagers: [{{static_configs: [{{targets: ["AM"]}}]}}]}}
scrape_configs: [{{job_name: ragvigil, static_configs: [{{targets: ["127.0.0.1:{port}"]}}]}}]
"""
        am_cfg = to_alertmanager(via_am.url, None, group_wait="1s", group_interval="1s", repeat_interval="1h")
        with alertmanager_server(am_cfg) as am:
            rules = {"ragvigil.rules.yml": to_prometheus(default_rules(), 1.0)}
            with prometheus_server(prom_cfg.replace("AM", am.removeprefix("http://")), rules):
                time.sleep(8)  # a few scrapes and evaluations of the healthy state
                index = data / "index"
                results: dict[str, list[float]] = {"built-in engine": [], "Prometheus + Alertmanager": []}
                for trial in range(trials):
                    builtin.reset()
                    via_am.reset()
                    shutil.rmtree(index, ignore_errors=True)
                    index.write_text("fault")
                    onset = time.monotonic()
                    for name, inbox in (("built-in engine", builtin), ("Prometheus + Alertmanager", via_am)):
                        took = inbox.wait(("VectorStoreDown", "firing"), onset, 60)
                        if took is not None:
                            results[name].append(took)
                    console.print(
                        f"  trial {trial + 1}: built-in {results['built-in engine'][-1:]}, "
                        f"Prometheus+AM {results['Prometheus + Alertmanager'][-1:]} s"
                    )
                    index.unlink()
                    index.mkdir()
                    fixed = time.monotonic()
                    builtin.wait(("VectorStoreDown", "resolved"), fixed, 60)
                    via_am.wait(("VectorStoreDown", "resolved"), fixed, 60)
        inproc = results["built-in engine"]
        via = results["Prometheus + Alertmanager"]
        worst = max(inproc) if inproc else None
        report.add(
            Row(
                "fault → notification",
                "built-in engine (sampling every 3 s, VectorStoreDown for: 3s)",
                worst,
                "s",
                target="≤ 10 s",
                passed=worst is not None and len(inproc) == trials and worst <= 10,
                baseline_name="Prometheus + Alertmanager, same fault",
                baseline=max(via) if via else None,
                note=f"worst of {len(inproc)}/{trials} trials; each: "
                + ", ".join(f"{x:.1f}" for x in inproc)
                + " s; via Prometheus: "
                + ", ".join(f"{x:.1f}" for x in via)
                + " s",
            )
        )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=15, help="evaluation cycles per rule-set size")
    ap.add_argument("--trials", type=int, default=3, help="fault trials")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    if args.quick:
        args.cycles, args.trials = 5, 1
    started = time.perf_counter()
    console.print(f"[bold]ragvigil alerting benchmark[/bold] — {machine_line()}")
    report = Report("alerting: evaluation cost and time to notify (measured vs the baseline measured in the same run)")
    console.print("evaluation cost...")
    evaluation_cost(report, args.cycles)
    console.print("fault to notification...")
    with temp_data_dir("alerts") as tmp:
        fault_to_notification(report, args.trials, tmp)
    report.note(
        "Evaluation cost: synthetic history of a busy instance (HTTP series for 20 routes x 4 statuses with 13-bucket "
        "latency histograms, health, LLM, cache, answers), 15 minutes at 3 s; rules are the default pack's "
        "expressions repeated with varied thresholds."
    )
    report.note(
        "Fault: the vector index directory replaced by a file while ragvigil serves; the built-in engine notifies a "
        "webhook channel, Alertmanager a second receiver; both timed from the moment of the fault."
    )
    return report.finish(started, args.json)


if __name__ == "__main__":
    sys.exit(main())
