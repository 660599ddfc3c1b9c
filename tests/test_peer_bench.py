"""The LangChain peer of ``bench/chat.py`` answers from the knowledge base, on loopback, as its own process.

The peer needs the optional ``bench`` extra (LangChain); without it this file is skipped, with the
reason: the extra is optional, so its absence is not a failure. Two files of the sample help centre
keep the peer's start (it embeds every passage) short.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.realservers import free_port

for _module in ("langchain_core", "langchain_community", "langchain_text_splitters"):
    pytest.importorskip(_module, reason="the optional bench extra (LangChain) is not installed")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "helpcentre"
FILES = ("en-export-notes.md", "zh-billing-refund.md")


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    kb = tmp_path_factory.mktemp("peer-kb")
    for name in FILES:
        shutil.copy(SAMPLES / name, kb / name)
    port = free_port()
    log = kb.parent / "peer.log"
    cmd = [sys.executable, str(ROOT / "bench" / "peer_langchain.py"), "--port", str(port), "--kb", str(kb)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=kb)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the peer exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the peer was not ready in 300 s:\n{log.read_text(errors='replace')}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_the_peer_answers_from_the_knowledge_base(peer: str) -> None:
    assert httpx.get(f"{peer}/health", timeout=10).json()["chunks"] > 2
    export = (SAMPLES / "en-export-notes.md").read_text(encoding="utf-8")
    refund = (SAMPLES / "zh-billing-refund.md").read_text(encoding="utf-8")
    for question, source, text in (
        ("How do I export my notes?", "en-export-notes.md", export),
        ("怎么申请退款？", "zh-billing-refund.md", refund),
    ):
        r = httpx.post(f"{peer}/chat", json={"message": question}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is False
        assert body["answer"] and body["answer"] in text  # the top passage, verbatim from the file
        assert body["sources"][0]["source"] == source
        assert len(body["sources"]) <= 4  # the retriever's k


def test_the_peer_bounds_its_input(peer: str) -> None:
    assert httpx.post(f"{peer}/chat", json={"message": "x" * 2001}, timeout=30).status_code == 422
    assert httpx.post(f"{peer}/chat", json={"message": ""}, timeout=30).status_code == 422


def test_chat_bench_turns_the_peer_on_when_the_extra_is_installed() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import chat
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert chat.peer_available() is True
