"""Out-of-fold LightGBM teacher probabilities for knowledge distillation (`train.distill`).

    python -m riskstream_models.distill [--data FILE] [--out runs/teacher/oof.npz] \
        [--folds 5] [--threads 1]

The training split's patients are dealt into K folds; for each fold LightGBM on the baseline's
history features (`baselines.fit_lgb`, early-stopped on the validation split like the baseline)
is fitted on the other K-1 folds and predicts the held-out fold, so no training hour is scored by
trees that saw its patient. Saved (.npz): `aki` and `sepsis`, (N,) probabilities aligned to the
event-table rows and NaN outside the training split (validation, calib and test hours never get
teacher targets), with the table's `fingerprint`, the `split_seed` and the number of `folds`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .baselines import fit_lgb, history_features
from .data import SETA, load_events, make_labels


def folds(n: int, k: int, seed: int = 0) -> np.ndarray:
    """(n,) fold number in 0..k-1 of each of n entities: shuffled, sizes differing by at most 1."""
    return np.random.default_rng(seed).permutation(n) % k


def run(
    data: str = SETA, out: str = "runs/teacher/oof.npz", k: int = 5, seed: int = 0, threads: int = 1
) -> dict:
    t0 = time.time()
    ev = load_events(data)
    aki, keep, _ = make_labels(ev)
    X = history_features(ev)
    parts = ev.split(seed)
    train, va = parts["train"], ev.rows(parts["val"])  # entity indices; validation rows
    fold = folds(len(train), k, seed)
    targets = {"aki": (aki, keep)}
    if ev.sepsis is not None:
        targets["sepsis"] = (ev.sepsis, np.ones_like(keep))
    oof = {name: np.full(len(ev.time), np.nan, np.float32) for name in targets}
    for f in range(k):
        fit, held = ev.rows(train[fold != f]), ev.rows(train[fold == f])
        for name, (y, m) in targets.items():
            a, b = fit[m[fit]], va[m[va]]
            booster = fit_lgb(X.iloc[a], y[a], X.iloc[b], y[b], seed, threads)
            oof[name][held] = booster.predict(X.iloc[held], num_iteration=booster.best_iteration)
            print(
                f"fold {f + 1}/{k} {name}: {booster.best_iteration} trees "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )
    rows = ev.rows(train)
    res = {"seconds": time.time() - t0}
    for name, (y, m) in targets.items():  # the teacher's out-of-fold figures on the train split
        r = rows[m[rows]]
        res[name] = {
            "oof_auroc": roc_auc_score(y[r], oof[name][r]),
            "oof_auprc": average_precision_score(y[r], oof[name][r]),
        }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, fingerprint=ev.fingerprint, split_seed=seed, folds=k, **oof)
    Path(out).with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default=SETA)
    ap.add_argument("--out", default="runs/teacher/oof.npz")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="split, fold and LightGBM seed")
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.data, args.out, args.folds, args.seed, args.threads), indent=2))


if __name__ == "__main__":
    main()
