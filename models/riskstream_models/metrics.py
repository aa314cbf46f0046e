"""Metrics shared by training, evaluation and the baselines (numpy + scikit-learn only)."""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            err += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(err)


def threshold_at_precision(y: np.ndarray, p: np.ndarray, precision: float = 1 / 3) -> float:
    """Lowest threshold whose hour-level precision is >= `precision` (the highest recall there)."""
    prec, _, thr = precision_recall_curve(y, p)
    ok = np.flatnonzero(prec[:-1] >= precision)
    return float(thr[ok[0]]) if len(ok) else float("inf")


def episode_sensitivity(p, entity, time, keep, onset, threshold, horizon=48.0) -> float:
    """Share of first AKI onsets with an alert (p >= threshold) in the `horizon` h before them."""
    caught = total = 0
    starts = np.flatnonzero(np.r_[True, entity[1:] != entity[:-1], True])
    for a, b in itertools.pairwise(starts):
        on = np.flatnonzero(onset[a:b])
        if not len(on):
            continue
        t0 = time[a + on[0]]
        t, alert = time[a:b], keep[a:b] & (p[a:b] >= threshold)
        total += 1
        caught += bool((alert & (t >= t0 - horizon) & (t < t0)).any())
    return caught / max(total, 1)


def binary_report(y: np.ndarray, p: np.ndarray) -> dict:
    return {
        "auroc": float(roc_auc_score(y, p)),
        "auprc": float(average_precision_score(y, p)),
        "prevalence": float(y.mean()),
        "ece": ece(y, p),
        "hours": len(y),
    }


def aki_report(p, label, keep, entity, time, onset) -> dict:
    """Hour-level metrics on kept hours + episode sensitivity and alert rate at 33% precision."""
    y, q = label[keep], p[keep]
    rep = binary_report(y, q)
    thr = threshold_at_precision(y, q)
    rep.update(
        threshold_at_precision_33=thr,
        episode_sensitivity_at_precision_33=episode_sensitivity(p, entity, time, keep, onset, thr),
        alert_rate_at_precision_33=float((q >= thr).mean()),
        episodes=len(np.unique(entity[onset])),
    )
    return rep
