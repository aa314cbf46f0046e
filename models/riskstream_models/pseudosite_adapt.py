"""What `adapt` buys at a pseudo-site, measured on patients it never saw.

    python -m riskstream_models.pseudosite_adapt --split admission_start_held_out \
        --model runs/ps-admission_start/gbm [--local-entities 2000] [--out runs/adapt-...]

The pseudo-site is a group held out of set A (`pseudosite.SPLITS`); `--model` should be an
artifact trained without it (`train ... --set data.site_split=...`). The site's "own data" is a
seeded sample of `--local-entities` of the group's patients from the train/val/calib splits; the
evaluation is on the group's patients of the test split (neither the base model nor the
adaptation saw them). AKI-48h AUROC / AUPRC there for:
- the base artifact, unchanged;
- the artifact after `adapt` on the local data;
- LightGBM (history features) trained on set A without the group (its train split, early-stopped
  on its val split): the trees brought from elsewhere;
- LightGBM trained on the same local data only (adapt's fine-tune + calibration parts, early-
  stopped on its validation part).
Writes result.json (and the local table, the adapted artifact) under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .adapt import FRACTIONS, adapt
from .data import FEATURES, SETA, load_events, make_labels, split_entities
from .pseudosite import SPLITS, _metrics, entity_groups, network_risk, subset


def run(
    split: str,
    model: str,
    data: str = SETA,
    out: str = "runs/adapt",
    local_entities: int = 2000,
    seed: int = 0,
    threads: int = 1,
    lightgbm_from: str | None = None,
) -> dict:
    from .baselines import fit_lgb, history_features, history_matrix

    t0 = time.time()
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    ev = load_events(data, features=FEATURES)
    label, keep, onset = make_labels(ev)
    held = entity_groups(ev)[SPLITS[split][0]]
    part = ev.split(seed)
    ents = ev.entities()
    pool = np.flatnonzero(held & ~np.isin(np.arange(len(ents)), part["test"]))
    rng = np.random.default_rng(seed)
    local = np.sort(rng.choice(pool, min(local_entities, len(pool)), replace=False))
    frame = pd.read_parquet(data)
    local_path = outdir / "local.parquet"
    frame[frame.patient_id.isin(set(ents[local]))].to_parquet(local_path, index=False)
    test_ent = np.flatnonzero(held & np.isin(np.arange(len(ents)), part["test"]))
    test_ev = subset(ev, test_ent)
    rows = ev.rows(test_ent)
    y, k, o = label[rows], keep[rows], onset[rows]

    res: dict = {
        "split": split,
        "base_model": model,
        "local_entities": len(local),
        "local_pool": len(pool),
        "test_entities": len(test_ent),
        "test_hours": int(k.sum()),
        "seed": seed,
    }
    res["base"] = _metrics(network_risk(model, test_ev), y, k, test_ev, o)
    t1 = time.time()
    man = adapt(model, local_path, outdir / "art", seed=seed)
    res["adapt_seconds"] = round(time.time() - t1, 1)
    res["adaptation"] = {
        key: man["adaptation"]["figures"].get("aki_48h", {}).get(key)
        for key in ("val_before", "val_after", "best_epoch", "blend_weight_recurrent")
    }
    res["adapted"] = _metrics(network_risk(outdir / "art", test_ev), y, k, test_ev, o)

    # history features of the entities needed only (per entity, so the same as on the whole table)
    need = np.union1d(local, test_ent)
    sub = subset(ev, need)
    X = history_features(sub).to_numpy(np.float32)
    sub_rows = {e: (a, b) for e, a, b in zip(need, sub.starts[:-1], sub.starts[1:], strict=True)}

    def rows_of(idx: np.ndarray) -> np.ndarray:
        """Rows of X (the subset table) for entities idx of ev."""
        return np.concatenate([np.arange(*sub_rows[e]) for e in idx])

    xt = X[rows_of(test_ent)]
    if lightgbm_from:  # the complement-trained trees of an earlier pseudosite run
        prior = json.loads(Path(lightgbm_from).read_text())["splits"][split]
        assert prior["test_entities"] == len(test_ent), "another split"
        res["lightgbm_elsewhere"] = prior["lightgbm"]
    else:
        XA = history_matrix(ev)
        tr = ev.rows(np.intersect1d(np.flatnonzero(~held), part["train"]))
        va = ev.rows(np.intersect1d(np.flatnonzero(~held), part["val"]))
        tr, va = tr[keep[tr]], va[keep[va]]
        booster = fit_lgb(XA[tr], label[tr], XA[va], label[va], seed, threads)
        p = booster.predict(xt, num_iteration=booster.best_iteration).astype(np.float32)
        res["lightgbm_elsewhere"] = _metrics(p, y, k, test_ev, o)
    # LightGBM on the local data only, with adapt's own split of it
    lp = split_entities(ents[local], seed, FRACTIONS)
    fit_ent = np.flatnonzero(np.isin(ents, np.r_[lp["train"], lp["calib"]]))
    val_ent = np.flatnonzero(np.isin(ents, lp["val"]))
    tr, va = ev.rows(fit_ent), ev.rows(val_ent)
    ktr, kva = keep[tr], keep[va]
    xtr, xva = X[rows_of(fit_ent)][ktr], X[rows_of(val_ent)][kva]
    booster = fit_lgb(xtr, label[tr][ktr], xva, label[va][kva], seed, threads)
    p = booster.predict(xt, num_iteration=booster.best_iteration).astype(np.float32)
    res["lightgbm_local"] = _metrics(p, y, k, test_ev, o)
    res["seconds"] = round(time.time() - t0, 1)
    (outdir / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def table(res: dict) -> str:
    lines = [
        f"{res['split']}: {res['test_entities']} held-out test patients, {res['test_hours']} "
        f"hours; local data {res['local_entities']} of the group's {res['local_pool']} other "
        "patients",
        "",
        "| model | AUROC | AUPRC | episodes @33% precision |",
        "| --- | --- | --- | --- |",
    ]
    for key, what in (
        ("base", f"network ({res['base_model']}), not adapted"),
        ("adapted", "the same after `adapt` on the local data"),
        ("lightgbm_elsewhere", "LightGBM trained on set A without the group"),
        ("lightgbm_local", "LightGBM trained on the local data only"),
    ):
        m = res[key]
        ep = m.get("episode_sensitivity_at_precision_33", float("nan"))
        lines.append(f"| {what} | {m['auroc']:.3f} | {m['auprc']:.3f} | {ep:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--split", required=True, choices=list(SPLITS))
    ap.add_argument("--model", required=True, help="artifact trained without the group")
    ap.add_argument("--data", default=SETA)
    ap.add_argument("--out", default="runs/adapt")
    ap.add_argument("--local-entities", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads")
    ap.add_argument("--lightgbm-from", metavar="RESULT", help="pseudosite result.json to reuse")
    args = ap.parse_args(argv)
    res = run(
        args.split,
        args.model,
        args.data,
        args.out,
        args.local_entities,
        args.seed,
        args.threads,
        args.lightgbm_from,
    )
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
