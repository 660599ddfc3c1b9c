"""Fill the dataset vector cache (``bench/_vectors.py``) for every labelled set, ahead of the quality runs.

``python bench/precompute_vectors.py [--data DIR] [--only NAME ...]``: a one-off (about 20 minutes of one
core for all sets); every later benchmark or training run reads the vectors from the cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _datasets as ds
from _vectors import VectorCache


def texts_of(data: Path) -> dict[str, list[str]]:
    return {
        "banking77": [e.text for e in ds.banking77(data)],
        "clinc150": [e.text for split in ("train", "val", "oos_train", "oos_val") for e in ds.clinc150(data, split)],
        "chnsenticorp": [e.text for e in ds.chnsenticorp(data)],
        "vader": [e.text for which in ("tweets", "amazon") for e in ds.vader(data, which, neutral_band=0.0)],
        "crosswoz": [t for t, _ in ds.crosswoz_user_turns(data)],
        "cold_dev": [e.text for e in ds.cold(data, "dev")],
        "cold_train": [e.text for e in ds.cold(data, "train")],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ds.DEFAULT_DATA)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    cache = VectorCache()
    for name, texts in texts_of(args.data.resolve()).items():
        if args.only and name not in args.only:
            continue
        print(f"{name}: {len(texts)} texts", flush=True)
        cache.vectors(texts, progress=True)
    cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
