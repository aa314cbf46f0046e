"""Baselines on the same labels and patient splits: LightGBM and logistic regression on per-hour
features computed from history only.

    python -m riskstream_models.baselines [--data FILE] [--out runs/baselines]

Features per hour (only rows up to and including that hour): for every variable the last value,
hours since it was measured and the count so far; for 13 key variables the 6/24/72-hour rolling
mean/min/max of measured values and a trend (last minus the 72-hour mean); creatinine against its
48- and 168-hour minimum; demographics and ICU length of stay are among the variables.
Rolling windows count rows, i.e. hours for hourly tables like PhysioNet's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .data import SETA, EventTable, load_events, make_labels
from .metrics import aki_report, binary_report

KEY = [
    "HR",
    "O2Sat",
    "Temp",
    "SBP",
    "MAP",
    "Resp",
    "Creatinine",
    "BUN",
    "Potassium",
    "Phosphate",
    "Platelets",
    "PTT",
    "Hgb",
]


def history_features(ev: EventTable) -> pd.DataFrame:
    """(N, ~270) features for every row from that row and earlier rows of the same entity."""
    df = pd.DataFrame(ev.x, columns=ev.features)
    g = np.repeat(np.arange(len(ev.starts) - 1), np.diff(ev.starts))
    out = {}
    for f in ev.features:
        v = df[f]
        obs = v.notna()
        out[f"{f}_last"] = v.groupby(g).ffill()
        t_obs = pd.Series(np.where(obs, ev.time, np.nan)).groupby(g).ffill()
        out[f"{f}_since"] = ev.time - t_obs
        out[f"{f}_count"] = obs.astype(np.float32).groupby(g).cumsum()
    for f in [k for k in KEY if k in ev.features]:
        gr = df[f].groupby(g)
        for w in (6, 24, 72):
            r = gr.rolling(w, min_periods=1)
            out[f"{f}_mean_{w}h"] = r.mean().reset_index(level=0, drop=True)
            out[f"{f}_min_{w}h"] = r.min().reset_index(level=0, drop=True)
            out[f"{f}_max_{w}h"] = r.max().reset_index(level=0, drop=True)
        out[f"{f}_trend_72h"] = out[f"{f}_last"] - out[f"{f}_mean_72h"]
    if "Creatinine" in ev.features:
        gr = df["Creatinine"].groupby(g)
        for w in (48, 168):
            mn = gr.rolling(w + 1, min_periods=1).min().reset_index(level=0, drop=True)
            out[f"Creatinine_minus_min_{w}h"] = out["Creatinine_last"] - mn
            out[f"Creatinine_over_min_{w}h"] = out["Creatinine_last"] / mn.clip(lower=0.1)
    return pd.DataFrame(out).astype(np.float32)


def history_matrix(ev: EventTable, cache: str | Path = "runs/cache") -> np.ndarray:
    """`history_features` as float32 (N, F), cached under `cache` by the table's fingerprint
    (they take minutes for set A and depend on nothing else)."""
    path = Path(cache) / f"history-{ev.fingerprint.split(':')[-1][:16]}.npy"
    if path.exists():
        return np.load(path)
    X = history_features(ev).to_numpy(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


def fit_lgb(X, y, Xv, yv, seed=0, threads=2):
    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 63,
        "min_data_in_leaf": 200,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": threads,
        "seed": seed,
        "metric": "average_precision",
        "verbose": -1,
    }
    return lgb.train(
        params,
        lgb.Dataset(X, y),
        num_boost_round=2000,
        valid_sets=[lgb.Dataset(Xv, yv)],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )


def run(data: str = SETA, out: str = "runs/baselines", seed: int = 0, logreg: bool = True) -> dict:
    t0 = time.time()
    Path(out).mkdir(parents=True, exist_ok=True)
    ev = load_events(data)
    aki, keep, onset = make_labels(ev)
    X = history_features(ev)
    print(f"{X.shape[1]} history features for {len(X)} rows in {time.time() - t0:.0f} s")
    split = {k: ev.rows(idx) for k, idx in ev.split(seed).items()}
    tr, va, te = split["train"], split["val"], split["test"]
    res = {}
    models = {"lightgbm": None, "logreg": None} if logreg else {"lightgbm": None}
    for name in models:
        t1 = time.time()
        p = np.zeros((len(te), 2), np.float32)
        for k, (y, m) in enumerate([(aki, keep), (ev.sepsis, np.ones_like(keep))]):
            a, b = tr[m[tr]], va[m[va]]
            if name == "lightgbm":
                booster = fit_lgb(X.iloc[a], y[a], X.iloc[b], y[b], seed)
                p[:, k] = booster.predict(X.iloc[te], num_iteration=booster.best_iteration)
                if k == 0:
                    imp = pd.Series(booster.feature_importance("gain"), X.columns)
                    res["lightgbm_top_features"] = imp.nlargest(10).index.tolist()
                    booster.save_model(str(Path(out) / "lightgbm_aki.txt"))
            else:
                lr = make_pipeline(
                    SimpleImputer(strategy="median", keep_empty_features=True),
                    StandardScaler(),
                    LogisticRegression(C=0.1, max_iter=300),
                )
                Xa = X.iloc[a].clip(-1e4, 1e4)
                lr.fit(Xa, y[a])
                p[:, k] = lr.predict_proba(X.iloc[te].clip(-1e4, 1e4))[:, 1]
        res[name] = {
            "aki_48h": aki_report(
                p[:, 0], aki[te], keep[te], ev.entity[te], ev.time[te], onset[te]
            ),
            "sepsis": binary_report(ev.sepsis[te], p[:, 1]),
            "seconds": time.time() - t1,
        }
        print(
            name, json.dumps({k: res[name]["aki_48h"][k] for k in ("auroc", "auprc")}), flush=True
        )
    (Path(out) / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default=SETA)
    ap.add_argument("--out", default="runs/baselines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-logreg", action="store_true")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.data, args.out, args.seed, not args.no_logreg), indent=2))


if __name__ == "__main__":
    main()
