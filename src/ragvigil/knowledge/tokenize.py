"""Tokens for BM25 and relevance checks: jieba words for CJK runs, Snowball-stemmed words for Latin text."""

from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path

import Stemmer

from ragvigil.lean_import import import_without_pkg_resources

import_without_pkg_resources("jieba")  # its dictionary found by path, without pkg_resources (~5 MB)
import jieba  # noqa: E402

from ragvigil.knowledge.jieba_dict import CompactFreq, load_compact  # noqa: E402

_SEGMENT = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+(?:['’][a-z]+)?")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from into about as is are was were be been being
    do does did doing have has had having i me my we our you your he she it its they them their this that these
    those what which who whom whose when where why how can could should would will shall may might must
    not no yes so than then there here just also very too any some all each more most such only own same
    much many
    s t don doesn isn aren won ve ll re d m o y please hi hello thanks thank
    的 了 吗 呢 吧 啊 呀 是 在 和 与 及 或 我 你 您 他 她 它 我们 你们 他们 这 那 这个 那个 哪 哪个 什么 怎么
    怎样 如何 为什么 多少 有 没有 会 能 可以 要 想 请 请问 一下 一个 就 都 也 还 又 么 个 把 被 让 给 对 从
    到 为 以 之 其 而 并 但 如果 因为 所以 时候 现在 已经""".split()
)


# jieba's dictionary (~350k words) loaded once per process and shared by every Tokenizer: loading it
# costs about a second, and each runtime of a process (a CLI command beside a server, a test) used to
# load it again. Shared read-only: this module never calls jieba's add_word/del_word/suggest_freq.
# Kept in compact form (``jieba_dict``: ~3 MB where jieba's own dict of strings holds ~60 MB).
_DICTIONARIES: dict[str | None, tuple[CompactFreq, int]] = {}
_DICTIONARIES_LOCK = threading.Lock()


def _load_dictionary(segmenter: jieba.Tokenizer, cache_dir: Path) -> None:
    """Give ``segmenter`` its dictionary: the one this process loaded already, else load it (once)."""
    with _DICTIONARIES_LOCK:
        loaded = _DICTIONARIES.get(segmenter.dictionary)
        if loaded is None:
            loaded = load_compact(segmenter, cache_dir)  # read from the data dir, or built and kept there
            _DICTIONARIES[segmenter.dictionary] = loaded
        segmenter.FREQ, segmenter.total = loaded
        segmenter.initialized = True


class Tokenizer:
    """Text → lowercase tokens. One jieba instance; the first of a process keeps the dictionary's compact form
    in the data dir (``jieba_dict``)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._jieba = jieba.Tokenizer()
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        self._cache_dir = cache_dir or Path(tempfile.gettempdir())  # where jieba keeps its cache by default
        self._lock = threading.Lock()
        self._ready = False
        self._stem = Stemmer.Stemmer("english").stemWord  # "takes"/"take" must match for BM25

    def _ensure_loaded(self) -> None:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    _load_dictionary(self._jieba, self._cache_dir)
                    self._ready = True

    def tokens(self, text: str, keep_stopwords: bool = False) -> list[str]:
        """BM25 tokens; CJK runs use search-mode segmentation (words plus their sub-words)."""
        self._ensure_loaded()
        out: list[str] = []
        for m in _SEGMENT.finditer(text.lower()):
            seg = m.group()
            if _CJK.match(seg):
                words = self._jieba.lcut_for_search(seg) if len(seg) > 1 else [seg]
                out.extend(w for w in words if keep_stopwords or w not in STOPWORDS)
            elif keep_stopwords or seg not in STOPWORDS:
                out.append(self._stem(seg))
        return out


def is_cjk(text: str) -> bool:
    """True when CJK characters make up a large share of the letters (selects reply language)."""
    cjk = len(_CJK.findall(text))
    latin = len(re.findall(r"[A-Za-z]", text))
    return cjk > 0 and cjk * 3 >= latin
