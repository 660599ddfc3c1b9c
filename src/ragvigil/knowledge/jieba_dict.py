"""jieba's prefix dictionary in a compact form: a MARISA trie of its keys and an array of their counts.

Why: jieba keeps its dictionary as a Python dict of ~500k strings (each of its ~350k words and
every prefix of a word, the prefixes with count 0): ~60 MB of objects for the life of a process,
the largest part of a server's resident memory. The same keys in a ``marisa_trie.Trie`` take ~1.3 MB
and their counts, indexed by the trie's key id, ~2 MB; segmentation is unchanged (jieba asks only
``frag in FREQ``, ``FREQ[frag]`` and ``FREQ.get(frag)``, and ``CompactFreq`` answers those exactly as
the dict did), at a cost per lookup close to the dict's.

The compact form is built once from jieba's own ``gen_pfdict`` (the dictionary file it would read)
and kept beside jieba's usual cache, in the data dir: ``jieba.marisa`` (the trie) and
``jieba.freq`` (a JSON header line — the dictionary's fingerprint, the total count and the number
of keys — then the counts as unsigned 32-bit integers). A changed dictionary or jieba version, or a
torn pair of files, is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from array import array
from pathlib import Path
from typing import Any

import marisa_trie

__all__ = ["CompactFreq", "load_compact"]

log = logging.getLogger(__name__)

TRIE_FILE, FREQ_FILE = "jieba.marisa", "jieba.freq"
_FORMAT = 1


class CompactFreq(marisa_trie.Trie):
    """jieba's ``FREQ`` as jieba reads it: ``in`` for a word or a prefix, ``[]``/``get`` for its count (0: a prefix)."""

    counts: array

    def __getitem__(self, key: str) -> int:
        return self.counts[marisa_trie.Trie.__getitem__(self, key)]

    def get(self, key: str, default: Any = None) -> Any:
        i = marisa_trie.Trie.get(self, key, -1)
        return default if i < 0 else self.counts[i]

    @classmethod
    def of(cls, freq: dict[str, int]) -> CompactFreq:
        """The compact form of a jieba ``FREQ`` dict."""
        compact = cls(freq.keys())
        counts = array("I", bytes(4 * len(compact)))
        for word, count in freq.items():
            counts[marisa_trie.Trie.__getitem__(compact, word)] = count
        compact.counts = counts
        return compact


def _dictionary_file(segmenter: Any) -> Path:
    """The file jieba reads its dictionary from (the bundled ``dict.txt`` unless one was set)."""
    jieba = sys.modules[type(segmenter).__module__.split(".")[0]]
    return Path(segmenter.dictionary or Path(jieba.__file__).with_name("dict.txt"))


def _fingerprint(segmenter: Any) -> str:
    jieba = sys.modules[type(segmenter).__module__.split(".")[0]]
    path = _dictionary_file(segmenter)
    st = path.stat()
    return f"{_FORMAT}|{jieba.__version__}|{path}|{st.st_size}|{st.st_mtime_ns}"


def _read(directory: Path, fingerprint: str) -> tuple[CompactFreq, int] | None:
    try:
        with open(directory / FREQ_FILE, "rb") as fh:
            header = json.loads(fh.readline())
            raw = fh.read()
        if header.get("fingerprint") != fingerprint:
            return None
        compact = CompactFreq()
        compact.load(str(directory / TRIE_FILE))
        counts = array("I")
        counts.frombytes(raw)
        if len(compact) != header["keys"] or len(counts) != len(compact):
            return None  # a torn pair (one file replaced, the other not): rebuilt
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None
    compact.counts = counts
    return compact, int(header["total"])


def _write(directory: Path, fingerprint: str, compact: CompactFreq, total: int) -> None:
    """Both files replaced atomically, the trie first (the counts' header then names its key count)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".jieba-")
    os.close(fd)
    try:
        compact.save(tmp)
        os.replace(tmp, directory / TRIE_FILE)
        with open(tmp, "wb") as fh:
            header = {"fingerprint": fingerprint, "total": total, "keys": len(compact)}
            fh.write(json.dumps(header).encode() + b"\n")
            compact.counts.tofile(fh)
        os.replace(tmp, directory / FREQ_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_compact(segmenter: Any, directory: Path) -> tuple[CompactFreq, int]:
    """``segmenter``'s dictionary in compact form, with its total count: read from ``directory``, or built
    from jieba's dictionary file and kept there (a directory that cannot be written only costs a rebuild)."""
    fingerprint = _fingerprint(segmenter)
    if (kept := _read(directory, fingerprint)) is not None:
        return kept
    freq, total = segmenter.gen_pfdict(segmenter.get_dict_file())
    compact = CompactFreq.of(freq)
    del freq  # the ~60 MB dict: only the compact form is kept
    try:
        _write(directory, fingerprint, compact, total)
    except OSError as e:
        log.warning("jieba_dictionary_not_kept", extra={"directory": str(directory), "error": str(e)})
    return compact, total
