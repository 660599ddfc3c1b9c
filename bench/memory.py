"""Memory of the real server over many turns: RSS at checkpoints, and whether it levels off.

What it does (everything on 127.0.0.1, in a temp data dir, stops by itself):
  1. ``ragvigil ingest samples/helpcentre --vectors``;
  2. ``ragvigil serve`` (staging, auth and rate limits off, as ``bench/chat.py`` runs it);
  3. ``--turns N`` chat requests in steps of ``--step``, by the load generator of ``bench/chat.py``
     (closed-loop keep-alive clients, ``--clients`` of them; every turn a new session, persisted);
     after each step the server's RSS (``/proc/PID/status`` VmRSS) and the step's req/s and errors
     (a refused request, e.g. 503 ``overloaded`` from admission on a busy machine, counts as sent).

The table ends with the slope over the last half of the run (MB per 1,000 turns): ~0 means flat.
Target: RSS after 20,000 turns ≤ 300 MB and a slope of ~0 over the last half.

    .venv/bin/python bench/memory.py --turns 20000             # repeated questions, 50 clients
    .venv/bin/python bench/memory.py --turns 4000 --repeat-share 0.5
    .venv/bin/python bench/memory.py --turns 2000 --from-data-dir DIR   # a copy of DIR, ingested already

``--from-data-dir`` skips step 1 (~1–3 minutes of embedding on 2 cores): the server runs on a copy of a
data dir the samples were ingested into before (e.g. one kept with ``--keep``), so a change can be
measured in a short run; the number the target is about comes from a run that ingests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx

from _common import REPO_ROOT, Report, Row, console, exit_on_sigterm, free_port, machine_line, temp_data_dir
from chat import ingest_samples, ragvigil_server, run_loadgen, server_env  # the same server and load as chat.py

TARGET_MB = 300.0


def rss_mb(pid: int) -> float:
    """The resident set of a process in MB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def slope_mb_per_1k(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS over turns, in MB per 1,000 turns."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(r for _, r in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 1000 * sum((t - mx) * (r - my) for t, r in points) / den if den else 0.0


def stored_bytes_per_turn(db_path: Path) -> float | None:
    """Bytes of a stored turn's rows (content and JSON columns of its two messages), averaged."""
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            cols = [r[1] for r in conn.execute("PRAGMA table_info(messages)")]
            parts = [f"coalesce(length(CAST({c} AS BLOB)), 0)" for c in cols]
            total, rows = conn.execute(f"SELECT sum({' + '.join(parts)}), count(*) FROM messages").fetchone()
    except sqlite3.Error:
        return None
    return 2 * total / rows if rows else None


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=20_000, help="chat turns in all")
    ap.add_argument("--step", type=int, default=2_000, help="turns between two RSS checkpoints")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--repeat-share", type=float, default=1.0, help="share of repeated (popular) questions")
    ap.add_argument("--embed-threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--from-data-dir", type=Path, help="serve a copy of this ingested data dir (no ingest)")
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the server, e.g. RAGVIGIL_ANSWER_CACHE__TTL_S=60 (repeatable)",
    )
    args = ap.parse_args(argv)
    if not 0 < args.step <= args.turns:
        ap.error("--step must be in 1..--turns")

    report = Report(
        f"RSS of `ragvigil serve` over {args.turns:,} turns, {args.clients} clients, "
        f"repeat share {args.repeat_share:.0%}; {machine_line()}"
    )
    with temp_data_dir("rv-bench-memory", args.keep) as tmp:
        data_dir = tmp / "data"
        env = server_env(tmp, data_dir, args.embed_threads)
        if args.from_data_dir is not None:
            console.print(f"copying the ingested data dir {args.from_data_dir}…")
            shutil.copytree(args.from_data_dir, data_dir)
        else:
            console.print("ingesting the samples…")
            ingest_samples(env, tmp)
        env.update(setting.split("=", 1) for setting in args.server_env if "=" in setting)
        port = free_port()
        server = ragvigil_server(env, tmp, port)
        try:
            server.wait_ready(f"http://127.0.0.1:{port}/health/ready", 180)
            for q in ("怎么申请退款？", "How do I export my notes?"):  # warm: engines, caches, first imports
                httpx.post(f"http://127.0.0.1:{port}/api/v1/chat", json={"message": q}, timeout=60)
            points: list[tuple[int, float]] = [(0, rss_mb(server.proc.pid))]
            console.print(f"  start: {points[0][1]:.0f} MB")
            rows: list[tuple[int, float, float, int]] = [(0, points[0][1], 0.0, 0)]
            done = 0
            while done < args.turns:
                n = min(args.step, args.turns - done)
                spec = {
                    "host": "127.0.0.1",
                    "port": port,
                    "path": "/api/v1/chat",
                    "chat": True,
                    "concurrency": args.clients,
                    "duration_s": 3600,
                    "max_requests": n,
                    "timeout_s": 60,
                    "seed": args.seed + done,
                    "repeat_share": args.repeat_share,
                    "fresh_start": 10_000_000 + done,
                }
                t = time.perf_counter()
                result = run_loadgen(spec)
                done += n
                rss = rss_mb(server.proc.pid)
                points.append((done, rss))
                rows.append((done, rss, result["ok"] / (time.perf_counter() - t), result["n_errors"]))
                console.print(
                    f"  {done:>7,} requests: {rss:6.0f} MB, {rows[-1][2]:.0f} req/s, errors {result['errors']}"
                )
        finally:
            server.stop()
        per_turn = stored_bytes_per_turn(data_dir / "ragvigil.db")

    half = [p for p in points if p[0] >= args.turns / 2]
    slope = slope_mb_per_1k(half)
    for turns, rss, rps, errors in rows:
        note = f"{rps:.0f} req/s, {errors} errors in the step" if turns else "after the warm-up"
        report.add(Row("RSS", f"{turns:,} turns", rss, "MB", digits=0, note=note))
    final = points[-1][1]
    report.add(
        Row(
            "RSS",
            f"after {args.turns:,} turns",
            final,
            "MB",
            target=f"≤ {TARGET_MB:.0f} MB",
            passed=final <= TARGET_MB,
            digits=0,
        )
    )
    report.add(
        Row(
            "RSS",
            "slope over the last half",
            slope,
            "MB / 1k turns",
            target="~0 (≤ 1)",
            passed=abs(slope) <= 1.0,
            digits=2,
        )
    )
    if per_turn is not None:
        report.add(Row("storage", "stored bytes per turn", per_turn, "B", digits=0, note="both messages, every column"))
    report.print()
    return 0


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    raise SystemExit(main())
