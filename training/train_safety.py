"""Train the safety check's two probes over e5 query vectors and write them into the package.

    python training/train_safety.py [--data ../shared/datasets] [--max-public 4000]

crisis.npz (crisis vs benign): positives are the team-written crisis exemplars
(``training/safety_exemplars.yaml``, zh and en); negatives are its benign exemplars plus rows of the
public *train* files (BANKING77 and ChnSentiCorp outside their held-out splits, CLINC150 ``train``,
COLD ``train``),
none of which is about self-harm. offensive.npz (offensive vs safe): COLD ``train``. Only files the
datasets README marks *train* are read; the benchmark's numbers come from the *eval* files and the
held-out split. The crisis threshold is chosen by cross-validation on the training rows alone (5 folds
over the crisis exemplars *and* the negatives): the highest out-of-fold crisis recall whose out-of-fold
false-positive rate on each public source's benign rows stays at ``--fp-target`` (0.5 %, half the 1 % the
benchmark allows per set; the smallest source, COLD's ~430 cached rows, then allows 2), checked against
CLINC150 ``oos_train`` (never trained on). Never on eval files.

Vectors come from ``bench/_vectors.py`` (the turn's own ``embed_query`` vectors, cached on disk);
``--cached-only`` uses only public rows already in that cache, so a run never waits on embedding them.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import _datasets  # noqa: E402
from _vectors import VectorCache  # noqa: E402
from ragvigil.chat.probe import LinearProbe, fit  # noqa: E402
from ragvigil.chat.safety.classifier import CRISIS_WEIGHTS, OFFENSIVE_WEIGHTS  # noqa: E402

EXEMPLARS = Path(__file__).with_name("safety_exemplars.yaml")
SOURCES = {
    "safety_exemplars.yaml": "written for ragvigil (Apache-2.0)",
    "BANKING77 train (outside the held-out split)": "PolyAI-LDN/task-specific-datasets, CC BY 4.0",
    "ChnSentiCorp (outside the held-out split)": "SophonPlus/ChineseNlpCorpus, no licence file (research use)",
    "CLINC150 train / oos_train": "clinc/oos-eval, CC BY 3.0",
    "COLD train": "thu-coai/COLDataset, Apache-2.0",
}


def cached(cache: VectorCache, texts: list[str], cached_only: bool) -> tuple[list[str], np.ndarray]:
    """The texts (and vectors) of ``texts`` the cache already holds, or all of them embedded."""
    if not cached_only:
        return texts, cache.vectors(texts, progress=True)
    keys = [cache.key(t) for t in texts]
    have: set[str] = set()
    for start in range(0, len(keys), 900):
        chunk = keys[start : start + 900]
        marks = ",".join("?" * len(chunk))
        have.update(k for (k,) in cache._db.execute(f"SELECT key FROM vectors WHERE key IN ({marks})", chunk))
    kept = [t for t, k in zip(texts, keys, strict=True) if k in have]
    return kept, cache.vectors(kept) if kept else np.zeros((0, 384), dtype=np.float32)


def sample(texts: list[str], n: int, seed: int = _datasets.SEED) -> list[str]:
    texts = sorted(set(texts))
    random.Random(seed).shuffle(texts)
    return texts[:n]


def out_of_fold(pos: np.ndarray, neg: np.ndarray, folds: int, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    """Crisis probability of each positive and each negative from a probe that did not see that row."""
    rng = np.random.default_rng(0)
    pos_fold = rng.permutation(len(pos)) % folds
    neg_fold = rng.permutation(len(neg)) % folds
    pos_p, neg_p = np.zeros(len(pos)), np.zeros(len(neg))
    for f in range(folds):
        x = np.vstack([pos[pos_fold != f], neg[neg_fold != f]])
        y = ["crisis"] * int((pos_fold != f).sum()) + ["benign"] * int((neg_fold != f).sum())
        probe = fit(x, y, **kw)  # type: ignore[arg-type]
        c = probe.labels.index("crisis")
        pos_p[pos_fold == f] = probe.proba(pos[pos_fold == f])[:, c]
        neg_p[neg_fold == f] = probe.proba(neg[neg_fold == f])[:, c]
    return pos_p, neg_p


def choose_threshold(pos_p: np.ndarray, public_p: dict[str, np.ndarray], fp_target: float, floor: float = 0.5) -> float:
    """The lowest threshold (so the highest recall) whose false-positive rate on *each* public source is at
    most ``fp_target``: the target holds per data set, and a small source (COLD's social-media talk) would
    hide inside a pooled rate. Never below ``floor``, where a probe's "crisis" would be its minority call."""
    pooled = np.concatenate(list(public_p.values()))
    candidates = np.unique(np.concatenate([pos_p, pooled, [floor, 1.0]]))
    ok = [
        t
        for t in candidates
        if t >= floor and all(float((p >= t).mean()) <= fp_target for p in public_p.values() if len(p))
    ]
    return float(min(ok)) if ok else 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_datasets.DEFAULT_DATA)
    ap.add_argument("--max-public", type=int, default=4000, help="rows per public set (fixed sample)")
    ap.add_argument("--cached-only", action="store_true", help="public rows only if already embedded")
    ap.add_argument("--fp-target", type=float, default=0.005, help="out-of-fold false-positive rate per source")
    args = ap.parse_args()
    cache = VectorCache()
    ex = yaml.safe_load(EXEMPLARS.read_text(encoding="utf-8"))
    crisis = [t for lang in ("zh", "en") for t in ex["crisis"][lang]]
    benign = [t for lang in ("zh", "en") for t in ex["benign"][lang]]
    banking_train, _ = _datasets.split_holdout(_datasets.banking77(args.data))
    cold_train = _datasets.cold(args.data, "train")
    senti_train, _ = _datasets.split_holdout(_datasets.chnsenticorp(args.data))
    public_sets = {
        "ChnSentiCorp": sample([e.text for e in senti_train], args.max_public),
        "BANKING77": sample([e.text for e in banking_train], args.max_public),
        "CLINC150": sample([e.text for e in _datasets.clinc150(args.data, "train")], args.max_public),
    }
    pos = cache.vectors(crisis, progress=True)
    public = {name: cached(cache, texts, args.cached_only)[1] for name, texts in public_sets.items()}
    public["COLD"] = cached(cache, sample([e.text for e in cold_train], args.max_public), args.cached_only)[1]
    everyday = np.vstack([cache.vectors(benign), *(public[k] for k in public_sets)])
    neg = np.vstack([everyday, public["COLD"]])
    source = np.concatenate([np.full(len(v), k) for k, v in public.items()])  # of each public negative row
    kw = {"l2": 3e-3, "epochs": 400, "balanced": True}
    pos_p, neg_p = out_of_fold(pos, neg, 5, **kw)
    n_team = len(benign)  # the first rows of ``neg``: team-written look-alikes, not public rows
    public_p = neg_p[n_team:]
    by_source = {k: public_p[source == k] for k in public}
    threshold = choose_threshold(pos_p, by_source, args.fp_target)
    recall = float((pos_p >= threshold).mean())
    calib_texts, calib = cached(cache, [e.text for e in _datasets.clinc150(args.data, "oos_train")], args.cached_only)
    probe = fit(np.vstack([pos, neg]), ["crisis"] * len(pos) + ["benign"] * len(neg), **kw)
    calib_p = probe.proba(calib)[:, probe.labels.index("crisis")] if len(calib) else np.zeros(1)
    print(f"crisis probe: {len(pos)} crisis / {len(neg)} benign rows; calibration rows {len(calib_texts)}")
    print(
        f"  5-fold CV threshold at {args.fp_target:.1%} FP per public source: {threshold:.3f}; "
        f"out-of-fold recall {recall:.3f}; "
        f"out-of-fold FP public {float((public_p >= threshold).mean()):.4f} "
        f"({', '.join(f'{k} {float((v >= threshold).mean()):.4f} of {len(v)}' for k, v in by_source.items())}), "
        f"team look-alikes {float((neg_p[:n_team] >= threshold).mean()):.3f}; "
        f"CLINC150 oos_train FP {float((calib_p >= threshold).mean()):.4f}"
    )
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):
        print(
            f"  at {t:.2f}: out-of-fold recall {float((pos_p >= t).mean()):.3f}, "
            f"public FP {float((public_p >= t).mean()):.4f}, look-alikes FP {float((neg_p[:n_team] >= t).mean()):.3f}"
        )
    probe.meta.update(
        kind="crisis",
        sources=SOURCES,
        model=cache.model,
        suggested_threshold=round(threshold, 4),
        out_of_fold_recall=round(recall, 4),
        positives=len(pos),
        negatives=len(neg),
    )
    probe.save(CRISIS_WEIGHTS)
    cold_texts, cold_vecs = cached(cache, sample([e.text for e in cold_train], 4 * args.max_public), args.cached_only)
    label = {e.text: e.label for e in cold_train}
    # COLD is Chinese social-media talk: without everyday and customer-service rows as "safe", the probe reads
    # any English or support sentence as unlike COLD's safe side, and so as offensive
    offensive = fit(
        np.vstack([cold_vecs, everyday]),
        [label[t] for t in cold_texts] + ["safe"] * len(everyday),
        l2=1e-2,
        epochs=300,
        balanced=False,  # balanced would weigh COLD's safe rows, a tenth of "safe", below its offensive ones
    )
    offensive.meta.update(
        kind="offensive",
        sources=SOURCES,
        model=cache.model,
    )
    offensive.save(OFFENSIVE_WEIGHTS)
    print(f"offensive probe: {len(cold_texts)} COLD train rows")
    for path in (CRISIS_WEIGHTS, OFFENSIVE_WEIGHTS):
        LinearProbe.load(path)  # written and readable
        print(f"wrote {path.name} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
