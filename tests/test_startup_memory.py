"""What a default start-up holds: tables in compact form and no module only another mode needs.

The RSS itself is measured by ``bench/memory.py``; these tests pin the causes: each one fails if the
heavy import or the large table comes back.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ragvigil.knowledge.embeddings import CachedQueryEmbedder, IdleReleasingEmbedder

ROOT = Path(__file__).resolve().parents[1]
CJK_POINTS = [*range(0x3400, 0x4DC0), *range(0x4E00, 0xA000), *range(0xF900, 0xFB00)]


def _modules_after(code: str, names: tuple[str, ...], env: dict[str, str] | None = None) -> list[str]:
    """The ``names`` (packages, with any submodule) imported by ``code`` run in a fresh interpreter."""
    probe = (
        f"import json, sys\n{code}\n"
        f"names = {names!r}\n"
        "print(json.dumps(sorted(n for n in names if any(m == n or m.startswith(n + '.') for m in sys.modules))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_safety_check_reads_pinyin_without_importing_pypinyin() -> None:
    # importing pypinyin loads its phrase dictionary too: ~55 MB held for nothing
    code = (
        "from ragvigil.chat.safety import SafetyChecker\n"
        "checker = SafetyChecker()\n"
        "assert checker.check('wo xiang zisha 了').flagged, 'typed pinyin must still be matched'\n"
    )
    assert _modules_after(code, ("pypinyin",)) == []


def test_the_compact_pinyin_table_reads_as_pypinyins_first_reading() -> None:
    normalize = importlib.import_module("ragvigil.chat.safety.normalize")
    from pypinyin.pinyin_dict import pinyin_dict

    codes, names = normalize._pinyin_table()
    assert len(names) < 2**16 and len(codes) == 0xFB00
    for point in CJK_POINTS:
        readings = pinyin_dict.get(point)
        expected = readings.split(",")[0].translate(normalize._TONES).upper() if readings else ""
        assert (names[codes[point]] if codes[point] else "") == expected, hex(point)
    assert normalize.pinyin_of("wo 想 zisha le 紫砂") == "wo XIANG zisha le ZI SHA"


def test_jieba_and_zhconv_find_their_data_without_pkg_resources() -> None:
    # pkg_resources scans every installed distribution when imported; both libraries open the same file by path
    code = (
        "from ragvigil.knowledge.tokenize import Tokenizer\n"
        "from ragvigil.chat.safety import normalize\n"
        "assert Tokenizer().tokens('怎么申请退款') == ['申请', '退款'], 'jieba must have its dictionary'\n"
        "assert normalize('我們', 100).text == '我们', 'zhconv must have its table'\n"
    )
    assert _modules_after(code, ("pkg_resources",)) == []


def test_a_process_that_imported_pkg_resources_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "pkg_resources.py").write_text("def resource_stream(package, name): ...\n")
    code = (
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import pkg_resources\n"
        "from ragvigil.lean_import import import_without_pkg_resources\n"
        "import_without_pkg_resources('zhconv')\n"
        "assert sys.modules['zhconv.zhconv'].resource_stream is pkg_resources.resource_stream\n"
    )
    assert _modules_after(code, ("pkg_resources",)) == ["pkg_resources"]


# imported only by a mode that is not the default: a Chroma server, S3 backups, Redis, a GGUF model, OTLP export
OTHER_MODES = ("chromadb", "boto3", "botocore", "redis", "llama_cpp", "opentelemetry.exporter", "psycopg", "psycopg2")
UNNEEDED = ("pkg_resources", "pypinyin")
# imported by the feature that needs them: encrypted backups and message log, HTML and PDF documents
ON_DEMAND = ("cryptography", "bs4", "pypdf")


def test_a_default_runtime_imports_no_other_modes_client(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path\n"
        "import ragvigil.api.server\n"
        "from ragvigil.app import Runtime\n"
        "from ragvigil.config import Settings\n"
        f"rt = Runtime(Settings(_env_file=None, data_dir=Path({str(tmp_path / 'data')!r})))\n"
        "try:\n"
        "    assert rt.safety.check('我想自杀').crisis, 'the safety check must really run'\n"
        "    assert rt.tokenizer.tokens('怎么申请退款') == ['申请', '退款']\n"
        "    from ragvigil.knowledge.jieba_dict import CompactFreq\n"
        "    assert isinstance(rt.tokenizer._jieba.FREQ, CompactFreq), 'jieba must hold the compact dictionary'\n"
        "finally:\n"
        "    rt.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVIGIL_")}
    env["RAGVIGIL_CONFIG_FILE"] = str(tmp_path / "empty.toml")
    (tmp_path / "empty.toml").touch()
    assert _modules_after(code, OTHER_MODES + UNNEEDED + ON_DEMAND, env=env) == []


def test_a_redis_url_still_loads_the_redis_client() -> None:
    code = (
        "from ragvigil.config import Settings\n"
        "from ragvigil.ops.shared import build_shared\n"
        "shared = build_shared(Settings(_env_file=None, redis={'url': 'redis://127.0.0.1:9/0'}))\n"
        "assert shared.enabled and shared.breaker_store(['a']) is not None\n"
        "from ragvigil.ops.shared import RedisUnavailable\n"
        "shared.close()\n"
    )
    assert _modules_after(code, ("redis",)) == ["redis"]


class _CountingEmbedder:
    dim, name = 384, "toy"

    def __init__(self) -> None:
        self.calls = 0

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        self.calls += 1
        return np.full(self.dim, float(len(text)), dtype=np.float32)


def test_the_query_cache_holds_size_entries_of_one_vector_and_a_fixed_size_key() -> None:
    inner = _CountingEmbedder()
    cache = CachedQueryEmbedder(inner, size=3)  # type: ignore[arg-type]
    questions = [f"{i} " + "退款怎么申请" * 300 for i in range(10)]  # 1,800+ characters each
    for q in questions:
        cache.embed_query(q)
    assert len(cache._cache) == 3
    assert all(len(key) == 16 for key in cache._cache)  # not the question's ~4 KB
    held = sum(len(k) + v.nbytes for k, v in cache._cache.items())
    assert held <= 3 * (16 + 384 * 4)
    cache.embed_query("  " + questions[-1].upper() + " ")  # the same normalised question: a hit
    assert inner.calls == 10
    cache.embed_query(questions[0])  # the least recent was dropped
    assert inner.calls == 11


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_fillers_engine_is_made_on_first_use_and_dropped_when_idle() -> None:
    made: list[_CountingEmbedder] = []

    def make() -> _CountingEmbedder:
        made.append(_CountingEmbedder())
        return made[-1]

    lazy = IdleReleasingEmbedder(make, 384, "toy", idle_s=0.05)  # type: ignore[arg-type]
    try:
        assert not lazy.loaded and made == []  # nothing made at build time
        lazy.embed_query("first")
        assert lazy.loaded and len(made) == 1
        assert _wait_for(lambda: not lazy.loaded)  # idle: dropped
        assert lazy.released == 1
        lazy.embed_query("again")  # made again by the next call
        assert len(made) == 2 and made[-1].calls == 1
    finally:
        lazy.close()


def test_the_fillers_engine_is_never_dropped_during_a_call() -> None:
    started, finish = threading.Event(), threading.Event()

    class Slow(_CountingEmbedder):
        def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
            started.set()
            finish.wait(10)
            return super().embed_query(text, timeout_s)

    lazy = IdleReleasingEmbedder(Slow, 384, "toy", idle_s=0.02)  # type: ignore[arg-type]
    try:
        lazy.embed_query("warm")  # a finished call arms the idle timer
        worker = threading.Thread(target=lazy.embed_query, args=("slow",))
        worker.start()
        assert started.wait(10)
        time.sleep(0.2)  # several idle periods pass while the call runs
        assert lazy.loaded and lazy.released == 0
        finish.set()
        worker.join(10)
        assert _wait_for(lambda: not lazy.loaded) and lazy.made == 1
    finally:
        finish.set()
        lazy.close()
