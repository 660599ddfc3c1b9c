"""``python -m ragvigil.chat.intent check FILE``: every problem of an intents file, exit 1 when there are any.

Only validation (no model is loaded), so an operator can check a file before pointing
``RAGVIGIL_INTENTS_FILE`` at it. ``python -m ragvigil.chat.intent vectors`` rewrites the shipped
intents' example vectors (``default_vectors.npz``) after the default file or the model changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ragvigil.chat.intent.spec import IntentFileError, load_file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["vectors"]:
        return write_shipped_vectors()
    if len(args) != 2 or args[0] != "check":
        print("usage: python -m ragvigil.chat.intent check FILE", file=sys.stderr)
        return 2
    try:
        intents = load_file(Path(args[1]))
    except IntentFileError as exc:
        print(exc)
        return 1
    examples = sum(len(i.examples) for i in intents.intents)
    print(f"{args[1]}: ok, {len(intents.intents)} intents, {examples} examples, threshold {intents.threshold}")
    return 0


def write_shipped_vectors() -> int:
    from ragvigil.chat.intent.spec import DEFAULT_FILE
    from ragvigil.chat.intent.vectors import SHIPPED_VECTORS, ExampleVectors
    from ragvigil.knowledge.embeddings import E5Embedder

    texts = [e for i in load_file(DEFAULT_FILE).intents for e in i.examples]
    vectors = ExampleVectors(E5Embedder(), None, shipped=None)
    rows = vectors.vectors(texts)
    vectors._write({vectors.key(t): r for t, r in zip(texts, rows, strict=True)}, SHIPPED_VECTORS)
    print(f"{SHIPPED_VECTORS}: {len(texts)} example vectors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
