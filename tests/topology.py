"""The scaled topology on loopback, every part a real process: PostgreSQL, Redis, ``chroma run``, two
``ragvigil serve`` replicas sharing them, nginx in front (the committed site file), Prometheus scraping
both replicas with the exported rules, Alertmanager delivering to a webhook receiver.

Why one context manager: the topology tests and ``bench/scale.py`` need the same wiring, and a part
started by hand is a part left running when something fails. :func:`topology` starts the parts in
dependency order on free loopback ports (the schema migrated once, the sample help centre ingested
once, both before any replica starts, as a deploy does), yields a :class:`Topology`, and stops
everything when the block ends; a block that fails prints the log of every replica and of nginx.

A replica can be killed (SIGKILL: a crash) and restarted (SIGTERM, wait for the drained exit, start
again on the same port, so nginx and Prometheus find it where they expect it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.deploy_tools import DEPLOY, NGINX_SITE, nginx_wrapper
from tests.realservers import (
    HOST,
    SRC,
    RedisServer,
    RestartableServer,
    ServerStartError,
    ServerUnavailable,
    _exit_reason,
    _stop_group,
    _tail,
    chroma_server,
    create_database,
    free_port,
    postgres_server,
    redis_server,
    wait_until,
)
from tests.receivers import Receiver, http_receiver

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "helpcentre"
RULES = DEPLOY / "prometheus" / "ragvigil-rules.yml"
# the settings that make a replica share state through Redis: left out, it keeps it in process
REDIS_FREE = ("RAGVIGIL_REDIS__URL",)
DRAIN_GRACE_S = 20.0  # a replica's shutdown.grace: longer than any turn of these tests
SCRAPE_S = 1  # Prometheus scrapes and evaluates every second here (5 s in the deploy file)

# Every replica's settings besides the shared services'. Per-key and per-user limits are raised, not
# switched off, so the Redis-backed counters are on the path of every turn without answering the
# bounded test load 429.
REPLICA_SETTINGS = {
    "RAGVIGIL_LOG_LEVEL": "WARNING",
    "RAGVIGIL_DATABASE__MIGRATE_ON_START": "false",  # migrated once, before the replicas start
    "RAGVIGIL_FAULTS__ENABLED": "true",  # the alert path is shown with an injected fault
    "RAGVIGIL_SHUTDOWN_GRACE_S": str(DRAIN_GRACE_S),
    "RAGVIGIL_ADMISSION__PER_KEY": "100000/minute",
    "RAGVIGIL_ADMISSION__PER_USER": "100000/minute",
    "RAGVIGIL_RETRIEVAL__SENTENCE_VECTORS_PER_CHUNK": "0",  # passage vectors only: quicker to fill
}


class Replica(RestartableServer):
    """One ``ragvigil serve`` on a fixed loopback port; ``kill`` crashes it, ``restart`` drains it first."""

    def __init__(self, name: str, data: Path, port: int, env: dict[str, str], log: Path) -> None:
        cmd = [sys.executable, "-m", "ragvigil.cli", "serve", "--host", HOST, "--port", str(port)]
        full_env = os.environ | env | {"RAGVIGIL_DATA_DIR": str(data)}
        super().__init__(f"ragvigil serve {name}", cmd, port, f"http://{HOST}:{port}/health/ready", log, 120, full_env)
        self.name, self.data = name, data
        self.address = f"{HOST}:{port}"
        self.exit_codes: list[int] = []  # of each drained stop, in order
        self.restarts: list[tuple[float, float]] = []  # (seconds to drain and exit, seconds to be ready again)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing is drained or journaled."""
        self.stop(signal.SIGKILL)

    def restart(self, exit_timeout: float = DRAIN_GRACE_S + 15) -> int:
        """SIGTERM, wait until the process has drained and exited, start it again; returns its exit code."""
        proc = self.proc
        assert proc is not None, f"{self.what} is not running"
        began = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=exit_timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc, signal.SIGKILL, grace=5)
            raise AssertionError(f"{self.what} did not exit within {exit_timeout:g}s of SIGTERM") from None
        exited = time.monotonic()
        self.exit_codes.append(code)
        self.proc = None
        self.start()
        self.restarts.append((exited - began, time.monotonic() - exited))
        return code


@dataclass
class Topology:
    """What :func:`topology` yields: the addresses of every part and the handles tests act on."""

    nginx: str  # base URL clients use
    replicas: list[Replica]
    prometheus: str
    alertmanager: str
    webhook: Receiver
    redis: RedisServer
    chroma: RestartableServer
    database_url: str
    admin_key: str
    nginx_dir: Path
    phases: dict[str, float]  # seconds each start-up step took
    env: dict[str, str]  # every replica's settings
    workdir: Path
    extras: list[Replica] = field(default_factory=list)  # replicas nginx does not know (add_replica)

    def upstreams(self, since: int = 0) -> list[tuple[str, int, str, str]]:
        """nginx's access log from line ``since``: (method, status, upstream addresses, upstream statuses)."""
        lines = (self.nginx_dir / "upstream.log").read_text(errors="replace").splitlines()[since:]
        out = []
        for line in lines:
            method, status, addrs, statuses = line.split("\t")
            out.append((method, int(status), addrs, statuses))
        return out

    def log_mark(self) -> int:
        """The access log's length now: pass it to :meth:`upstreams` to read what came after."""
        path = self.nginx_dir / "upstream.log"
        return len(path.read_text(errors="replace").splitlines()) if path.exists() else 0

    def answered_by(self, since: int = 0) -> Counter[str]:
        """Requests nginx answered from each replica's address (the last upstream tried) since ``since``."""
        return Counter(addrs.split(", ")[-1] for _m, _s, addrs, _st in self.upstreams(since))

    def wait_in_rotation(self, replica: Replica, timeout: float = 30) -> None:
        """Until nginx answers from ``replica`` again (GETs through it; a replica it saw fail is left
        out for ``fail_timeout``, 10 s): restarting the other one before that leaves nginx none."""
        mark = self.log_mark()

        def answered() -> bool:
            httpx.get(self.nginx + "/health/ready", timeout=5)
            return any(s == 200 and a.split(", ")[-1] == replica.address for _m, s, a, _st in self.upstreams(mark))

        wait_until(answered, timeout, f"nginx answering from {replica.name}", interval=0.2)

    def add_replica(self, name: str, without: tuple[str, ...] = ()) -> Replica:
        """One more replica on the shared services, not behind nginx (addressed directly), with the
        settings in ``without`` left out (e.g. :data:`REDIS_FREE`); stopped with the topology."""
        data = self.workdir / f"extra-{name}"
        data.mkdir()
        env = {k: v for k, v in self.env.items() if k not in without}
        replica = Replica(name, data, free_port(), env, self.workdir / f"extra-{name}.log")
        self.extras.append(replica)
        replica.start()
        return replica

    def deaths(self) -> list[str]:
        return [d for r in self.replicas if (d := r.death())]


def _env_for(database_url: str, redis: RedisServer, chroma: RestartableServer, prefix: str) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p),
        "RAGVIGIL_DATABASE_URL": database_url,
        "RAGVIGIL_REDIS__URL": redis.url,
        "RAGVIGIL_VECTOR_STORE__BACKEND": "chroma",
        "RAGVIGIL_VECTOR_STORE__URL": chroma.url,
        "RAGVIGIL_VECTOR_STORE__COLLECTION_PREFIX": prefix,
        **REPLICA_SETTINGS,
    }


def _cli(env: dict[str, str], data: Path, *args: str, timeout: float = 300) -> str:
    """Run ``ragvigil ARGS`` as a deploy step (its own data dir, the shared services); its stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "ragvigil.cli", *args],
        env=os.environ | env | {"RAGVIGIL_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        raise ServerStartError(f"ragvigil {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _nginx_binary() -> str:
    found = shutil.which("nginx")
    if found is None:
        raise ServerUnavailable("nginx is not installed (Debian package nginx)")
    return found


@contextlib.contextmanager
def nginx_server(upstreams: list[str], tmp: Path, site: str | None = None) -> Iterator[str]:
    """The committed nginx site in front of ``upstreams`` on a free loopback port; yields its base URL.

    Each request is also logged to ``tmp/upstream.log`` as method, status, the upstream addresses
    tried and their statuses (tab-separated), so a test can tell which replica answered it.
    """
    binary = _nginx_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = nginx_wrapper(site or NGINX_SITE.read_text(), upstreams, port, tmp)
    text = conf.read_text()
    access = f"access_log {tmp}/access.log;"
    assert access in text, "the nginx wrapper no longer writes the access log where this expects it"
    upstream_log = (
        "log_format upstream '$request_method\\t$status\\t$upstream_addr\\t$upstream_status';\n"
        f"    {access}\n    access_log {tmp}/upstream.log upstream;"
    )
    conf.write_text(text.replace(access, upstream_log))
    proc = subprocess.Popen(
        [binary, "-p", str(tmp), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://{HOST}:{port}"
    try:
        wait_until(
            lambda: httpx.get(base + "/nginx-health", timeout=2).status_code == 200,
            20,
            "nginx",
            abort=lambda: _exit_reason(proc),
        )
        yield base
        if reason := _exit_reason(proc):
            raise AssertionError(f"nginx died: {reason}\n{_tail(tmp / 'error.log')}")
    except BaseException:
        sys.stderr.write(f"--- nginx error.log ---\n{_tail(tmp / 'error.log')}\n")
        raise
    finally:
        _stop_group(proc, grace=5)


def prometheus_config(replicas: list[str], alertmanager: str) -> str:
    """The deploy file's prometheus.yml for these addresses, scraping and evaluating every second."""
    conf = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    conf["global"].update(
        {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"}
    )
    conf["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    jobs = [job for job in conf["scrape_configs"] if job["job_name"] == "ragvigil"]  # not Prometheus itself
    jobs[0]["static_configs"] = [{"targets": replicas}]
    conf["scrape_configs"] = jobs
    return yaml.safe_dump(conf, sort_keys=False)


def alertmanager_config(webhook: str) -> str:
    """The deploy file's alertmanager.yml delivering to ``webhook``, without the bearer key, waiting 1 s."""
    conf = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    for route in [conf["route"], *conf["route"].get("routes", [])]:
        route["group_wait"] = "1s"
    conf["route"]["group_interval"] = "2s"
    for receiver in conf["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
            hook.pop("http_config", None)
    return yaml.safe_dump(conf, sort_keys=False)


def _start_all(replicas: list[Replica]) -> None:
    """Start the replicas side by side (each waits for its own readiness); the first failure is raised."""
    errors: list[BaseException] = []

    def start(r: Replica) -> None:
        try:
            r.start()
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(r,), daemon=True) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def topology(replica_count: int = 2, *, settings: dict[str, str] | None = None) -> Iterator[Topology]:
    """Start the whole scaled topology; yield it; stop every part when the block ends.

    ``settings``: more ``RAGVIGIL_*`` variables for every replica (a benchmark's variants).
    Raises :class:`ServerUnavailable` before starting anything long when a binary is missing.
    """
    from tests.realservers import alertmanager_server, prometheus_server

    _nginx_binary()
    tmp = Path(tempfile.mkdtemp(prefix="rv-topo-"))
    replicas: list[Replica] = []
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        phases[name], clock = round(time.monotonic() - clock, 1), time.monotonic()

    try:
        with contextlib.ExitStack() as stack:
            pg = stack.enter_context(postgres_server())
            database_url = create_database(pg, "ragvigil")
            redis = stack.enter_context(redis_server())
            chroma = stack.enter_context(chroma_server())
            webhook = stack.enter_context(http_receiver())
            env = _env_for(database_url, redis, chroma, "topo_") | (settings or {})

            phase("services")
            setup = tmp / "setup"
            _cli(env, setup, "migrate")
            key_out = _cli(env, setup, "keys", "create", "topology-admin", "--role", "admin")
            admin_key = key_out.strip().splitlines()[-1]  # the key alone on stdout
            phase("migrate")
            # nothing else runs yet: the one embedding pass may use both cores
            _cli(
                env | {"RAGVIGIL_EMBED_THREADS": "2", "OMP_NUM_THREADS": "2"},
                setup,
                "ingest",
                str(SAMPLES),
                timeout=600,
            )
            phase("ingest")

            for i in range(replica_count):
                data = tmp / f"replica-{i + 1}"
                data.mkdir()
                replicas.append(Replica(f"r{i + 1}", data, free_port(), env, tmp / f"replica-{i + 1}.log"))
            extras: list[Replica] = []
            stack.callback(lambda: [r.stop(signal.SIGTERM) for r in [*replicas, *extras]])
            _start_all(replicas)
            phase("replicas")

            addresses = [r.address for r in replicas]
            base = stack.enter_context(nginx_server(addresses, tmp / "nginx"))
            am = stack.enter_context(alertmanager_server(alertmanager_config(webhook.url)))
            am_address = am.removeprefix("http://")
            prom = stack.enter_context(
                prometheus_server(prometheus_config(addresses, am_address), {RULES.name: RULES.read_text()})
            )
            topo = Topology(
                base,
                replicas,
                prom,
                am,
                webhook,
                redis,
                chroma,
                database_url,
                admin_key,
                tmp / "nginx",
                phases,
                env,
                tmp,
                extras,
            )
            try:
                yield topo
                if died := topo.deaths():
                    raise AssertionError("\n".join(died))
            except BaseException:
                for r in [*replicas, *extras]:
                    sys.stderr.write(f"--- {r.what} ({r.log}) ---\n{_tail(r.log, 60)}\n")
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
