"""Pseudo-sites within one data set: how the model holds up on patients unlike its training ones.

    python -m riskstream_models.pseudosite --model models/aki-lstm/1.2.0 \
        [--data setA.parquet] [--out runs/pseudosite] [--model-for sicu_held_out=DIR ...]

A model bought for another hospital meets patients its training never saw. Set A is one hospital
system, but it holds groups that differ the way sites do; each split holds one group out:
- `sicu_held_out` / `micu_held_out`: leave one unit out (`Unit2` = SICU, `Unit1` = MICU);
  patients with neither unit recorded always go with training.
- `later_start_held_out` / `admission_start_held_out`: records that start at ICU admission
  (`ICULOS` <= 1 at the first row) against records that start later in the stay.

Per split, AKI-48h AUROC/AUPRC on the held-out group's patients of the seeded TEST split only:
- the network: the ONNX artifact stepped event by event exactly as the service does
  (`evaluate.rollout`). By default the one artifact `--model`, trained on the pooled train split
  (which includes train patients of the held-out group: the network's figures are therefore
  optimistic for a truly new site). A network retrained on a split's complement can be given with
  `--model-for SPLIT=DIR`; `--write-splits` writes each split's training patients for that.
- LightGBM (`baselines.history_features`, `baselines.fit_lgb`), trained on the complement only:
  the complement's patients of the train split, early-stopped on its patients of the val split.
Also a `pooled` row (the whole test split; LightGBM on the whole train split) and, per model, the
worst pseudo-site. Writes `result.json` and `table.md` under `--out` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .data import FEATURES, SETA, EventTable, load_events, make_labels
from .metrics import aki_report

# split name -> (held-out group, description); the complement of the group is the training side
SPLITS = {
    "sicu_held_out": ("sicu", "SICU (Unit2) held out; train on MICU + unit unknown"),
    "micu_held_out": ("micu", "MICU (Unit1) held out; train on SICU + unit unknown"),
    "later_start_held_out": (
        "later_start",
        "records starting after ICU admission held out; train on those starting at admission",
    ),
    "admission_start_held_out": (
        "admission_start",
        "records starting at ICU admission held out; train on those starting later",
    ),
}


def entity_groups(ev: EventTable) -> dict[str, np.ndarray]:
    """Per entity (E,) bool masks: micu, sicu, unit_unknown, admission_start, later_start."""
    f = ev.features
    first = ev.starts[:-1]

    def any_one(name: str) -> np.ndarray:
        if name not in f:
            return np.zeros(len(first), bool)
        v = np.nan_to_num(ev.x[:, f.index(name)], nan=0.0) == 1.0
        return np.logical_or.reduceat(v, first) if len(v) else np.zeros(0, bool)

    micu, sicu = any_one("Unit1"), any_one("Unit2")
    if "ICULOS" in f:
        los0 = ev.x[first, f.index("ICULOS")]
        admission = ~(los0 > 1.0)  # missing ICULOS counts as a start at admission
    else:
        admission = np.ones(len(first), bool)
    return {
        "micu": micu,
        "sicu": sicu & ~micu,
        "unit_unknown": ~micu & ~sicu,
        "admission_start": admission,
        "later_start": ~admission,
    }


def subset(ev: EventTable, ent_idx: np.ndarray, features: list[str] | None = None) -> EventTable:
    """The entities ent_idx of ev (in that order), optionally with columns reordered to features."""
    rows = ev.rows(ent_idx) if len(ent_idx) else np.zeros(0, int)
    cols = [ev.features.index(c) for c in (features or ev.features)]
    n = np.diff(ev.starts)[ent_idx]
    return EventTable(
        ev.entity[rows],
        ev.time[rows],
        ev.x[rows][:, cols],
        list(features or ev.features),
        None if ev.sepsis is None else ev.sepsis[rows],
        np.r_[0, np.cumsum(n)],
        ev.fingerprint,
    )


def _metrics(p, y, keep, ev: EventTable, onset) -> dict:
    if keep.sum() == 0 or len(np.unique(y[keep])) < 2:
        return {"auroc": float("nan"), "auprc": float("nan"), "hours": int(keep.sum())}
    return aki_report(p, y, keep, ev.entity, ev.time, onset)


def network_risk(model_dir: str | Path, ev: EventTable) -> np.ndarray:
    """AKI-48h risk (N,) for every event of ev, stepping the ONNX artifact like the service."""
    from .evaluate import rollout

    man = json.loads((Path(model_dir) / "manifest.json").read_text())
    feats = [f["name"] for f in man["features"]]
    k = [o["name"] for o in man["outputs"]].index("aki_48h")
    return rollout(model_dir, subset(ev, np.arange(len(ev.starts) - 1), feats))[:, k]


def run(
    model: str,
    data: str = SETA,
    out: str | None = "runs/pseudosite",
    seed: int = 0,
    model_for: dict[str, str] | None = None,
    splits: list[str] | None = None,
    pooled: bool = True,
    threads: int = 2,
    lightgbm_from: str | None = None,
    lightgbm: bool = True,
) -> dict:
    from .baselines import fit_lgb, history_matrix

    t0 = time.time()
    model_for = model_for or {}
    splits = splits or list(SPLITS)
    ev = load_events(data, features=FEATURES)
    label, keep, onset = make_labels(ev)
    groups = entity_groups(ev)
    part = ev.split(seed)
    in_part = {k: np.isin(np.arange(len(ev.starts) - 1), v) for k, v in part.items()}
    # the network's risks on the test split, once per artifact
    test_idx = part["test"]
    test_ev = subset(ev, test_idx)
    test_rows = ev.rows(test_idx)
    cache: dict[str, np.ndarray] = {}
    # LightGBM's rows do not depend on the network: reuse them from an earlier result.json
    prior = json.loads(Path(lightgbm_from).read_text()) if lightgbm_from else None
    need_pooled = pooled and (prior is None or "lightgbm_pooled" not in prior.get("pooled", {}))
    need_pooled = need_pooled and lightgbm
    if lightgbm and (prior is None or need_pooled):
        X = history_matrix(ev)
        print(
            f"{X.shape[1]} history features, {len(ev.starts) - 1} entities, "
            f"{time.time() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    # LightGBM trained on the whole train split, as the shipped network is: the same-information
    # comparison on each pseudo-site (the complement-trained one shows what an unseen site costs)
    p_pooled = None
    if need_pooled:
        tr = ev.rows(np.flatnonzero(in_part["train"]))
        va = ev.rows(np.flatnonzero(in_part["val"]))
        tr, va = tr[keep[tr]], va[keep[va]]
        booster = fit_lgb(X[tr], label[tr], X[va], label[va], seed, threads)
        p_pooled = booster.predict(X[test_rows], num_iteration=booster.best_iteration)
        p_pooled = p_pooled.astype(np.float32)

    def net(mdir: str) -> np.ndarray:
        if mdir not in cache:
            cache[mdir] = network_risk(mdir, test_ev)
        return cache[mdir]

    def score(held: np.ndarray, train_side: np.ndarray, mdir: str, name: str) -> dict:
        """held/train_side: (E,) entity masks. Network and LightGBM on held ∩ test."""
        te_ent = np.flatnonzero(held & in_part["test"])
        sel = np.isin(test_idx, te_ent)  # entities of test_ev held out
        rows_mask = np.repeat(sel, np.diff(test_ev.starts))
        rows = test_rows[rows_mask]
        sub = subset(test_ev, np.flatnonzero(sel))
        y, k, o = label[rows], keep[rows], onset[rows]
        tr = ev.rows(np.flatnonzero(train_side & in_part["train"]))
        va = ev.rows(np.flatnonzero(train_side & in_part["val"]))
        tr, va = tr[keep[tr]], va[keep[va]]
        if not lightgbm:  # the network's rows only
            lgb: dict = {}
        elif prior is not None:
            old = prior["pooled"] if name == "pooled" else prior["splits"][name]
            assert old["test_entities"] == len(te_ent) and prior["seed"] == seed, "another split"
            lgb = {
                k: old[k]
                for k in ("lightgbm", "lightgbm_seconds", "lightgbm_trees", "lightgbm_pooled")
                if k in old
            }
        else:
            t1 = time.time()
            booster = fit_lgb(X[tr], label[tr], X[va], label[va], seed, threads)
            p_lgb = booster.predict(X[rows], num_iteration=booster.best_iteration)
            lgb = {
                "lightgbm": _metrics(p_lgb.astype(np.float32), y, k, sub, o),
                "lightgbm_seconds": round(time.time() - t1, 1),
                "lightgbm_trees": int(booster.best_iteration),
            }
        res = {
            "test_entities": len(te_ent),
            "test_hours": int(k.sum()),
            "aki_prevalence": float(y[k].mean()) if k.any() else float("nan"),
            "train_entities": int((train_side & in_part["train"]).sum()),
            "network_model": mdir,
            "network": _metrics(net(mdir)[rows_mask], y, k, sub, o),
            **lgb,
        }
        if p_pooled is not None:
            res["lightgbm_pooled"] = _metrics(p_pooled[rows_mask], y, k, sub, o)
        print(
            json.dumps(
                {
                    m: {q: round(res[m].get(q, float("nan")), 4) for q in ("auroc", "auprc")}
                    for m in ("network", "lightgbm")
                    if m in res
                }
            ),
            file=sys.stderr,
            flush=True,
        )
        return res

    res: dict = {"model": model, "data": str(data), "seed": seed, "splits": {}}
    for name in splits:
        group, desc = SPLITS[name]
        print(f"{name}: {desc}", file=sys.stderr, flush=True)
        held = groups[group]
        r = score(held, ~held, model_for.get(name, model), name)
        r["description"] = desc
        res["splits"][name] = r
    if pooled:
        everyone = np.ones(len(ev.starts) - 1, bool)
        print("pooled: the whole test split", file=sys.stderr, flush=True)
        res["pooled"] = score(everyone, everyone, model, "pooled")
    res["worst"] = worst(res["splits"])
    res["seconds"] = round(time.time() - t0, 1)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "result.json").write_text(json.dumps(res, indent=2) + "\n")
        (Path(out) / "table.md").write_text(table(res) + "\n")
    return res


def worst(splits: dict) -> dict:
    """Per model and metric the split with the lowest figure; and the largest LightGBM lead."""
    out: dict = {}
    for m in ("network", "lightgbm", "lightgbm_pooled"):
        for q in ("auroc", "auprc"):
            vals = {k: v[m][q] for k, v in splits.items() if m in v and np.isfinite(v[m][q])}
            if vals:
                k = min(vals, key=vals.__getitem__)
                out[f"{m}_{q}"] = {"split": k, "value": vals[k]}
    for q in ("auroc", "auprc"):
        gaps = {
            k: v["lightgbm"][q] - v["network"][q]
            for k, v in splits.items()
            if "lightgbm" in v and np.isfinite(v["lightgbm"][q] - v["network"][q])
        }
        if gaps:
            k = max(gaps, key=gaps.__getitem__)
            out[f"lightgbm_lead_{q}"] = {"split": k, "value": gaps[k]}
    return out


def table(res: dict) -> str:
    rows = list(res["splits"].items()) + ([("pooled", res["pooled"])] if "pooled" in res else [])
    if not all("lightgbm" in r for _, r in rows):  # network rows only (--no-lightgbm)
        lines = [
            "| split | held-out test patients | hours | AKI prevalence | network AUROC "
            "| network AUPRC |",
            "| --- " * 6 + "|",
        ]
        for name, r in rows:
            n = r["network"]
            lines.append(
                f"| {name} | {r['test_entities']} | {r['test_hours']} "
                f"| {r['aki_prevalence']:.3f} | {n['auroc']:.3f} | {n['auprc']:.3f} |"
            )
        return "\n".join(lines)
    both = all("lightgbm_pooled" in r for _, r in rows)
    head = (
        "LightGBM (complement) AUROC | LightGBM (train split) AUROC" if both else "LightGBM AUROC"
    )
    head2 = (
        "LightGBM (complement) AUPRC | LightGBM (train split) AUPRC" if both else "LightGBM AUPRC"
    )
    lines = [
        f"| split | held-out test patients | hours | AKI prevalence | network AUROC | {head} "
        f"| network AUPRC | {head2} |",
        "| --- " * (10 if both else 8) + "|",
    ]
    for name, r in rows:
        n, g = r["network"], r["lightgbm"]
        ga = f"{g['auroc']:.3f}" + (f" | {r['lightgbm_pooled']['auroc']:.3f}" if both else "")
        gp = f"{g['auprc']:.3f}" + (f" | {r['lightgbm_pooled']['auprc']:.3f}" if both else "")
        lines.append(
            f"| {name} | {r['test_entities']} | {r['test_hours']} | {r['aki_prevalence']:.3f} "
            f"| {n['auroc']:.3f} | {ga} | {n['auprc']:.3f} | {gp} |"
        )
    w = res.get("worst", {})
    lines.append("")
    for key, what in (
        ("network_auroc", "network, lowest AUROC"),
        ("network_auprc", "network, lowest AUPRC"),
        ("lightgbm_auroc", "LightGBM (complement), lowest AUROC"),
        ("lightgbm_auprc", "LightGBM (complement), lowest AUPRC"),
        ("lightgbm_lead_auroc", "largest lead of LightGBM (complement) in AUROC"),
        ("lightgbm_lead_auprc", "largest lead of LightGBM (complement) in AUPRC"),
    ):
        if key in w:
            v = w[key]["value"]
            fig = f"{v:+.3f}" if "lead" in key else f"{v:.3f}"
            lines.append(f"- worst pseudo-site, {what}: `{w[key]['split']}` ({fig})")
    return "\n".join(lines)


def write_splits(data: str, out: str, seed: int = 0) -> None:
    """Each split's training side (train/val entities of the complement), to retrain a network."""
    ev = load_events(data, features=FEATURES)
    groups = entity_groups(ev)
    ents = ev.entities()
    part = ev.split(seed)
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, (group, desc) in SPLITS.items():
        side = ~groups[group]
        doc = {
            "description": desc,
            **{
                k: sorted(ents[np.intersect1d(v, np.flatnonzero(side))].tolist())
                for k, v in part.items()
                if k in ("train", "val", "calib")
            },
            "test": sorted(ents[np.intersect1d(part["test"], np.flatnonzero(~side))].tolist()),
        }
        (Path(out) / f"{name}.json").write_text(json.dumps(doc) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="artifact folder (model.onnx + manifest.json)")
    ap.add_argument("--data", default=SETA, help="event table (Parquet or CSV)")
    ap.add_argument("--out", default="runs/pseudosite", help="writes result.json and table.md")
    ap.add_argument("--seed", type=int, default=0, help="patient split seed")
    ap.add_argument(
        "--model-for",
        action="append",
        default=[],
        metavar="SPLIT=DIR",
        help="a network retrained on that split's complement, evaluated instead of --model",
    )
    ap.add_argument("--split", action="append", choices=list(SPLITS), help="only these splits")
    ap.add_argument("--no-pooled", action="store_true", help="skip the pooled test-split row")
    ap.add_argument("--threads", type=int, default=2, help="LightGBM threads")
    ap.add_argument(
        "--lightgbm-from",
        metavar="RESULT",
        help="reuse the LightGBM rows of an earlier result.json (same data and seed) instead of "
        "fitting them again: they do not depend on the network",
    )
    ap.add_argument(
        "--no-lightgbm",
        action="store_true",
        help="the network's rows only (LightGBM's are deterministic: see models/README.md)",
    )
    ap.add_argument(
        "--write-splits", metavar="DIR", help="also write each split's patients to DIR/*.json"
    )
    args = ap.parse_args(argv)
    model_for = dict(s.split("=", 1) for s in args.model_for)
    unknown = set(model_for) - set(SPLITS)
    if unknown:
        ap.error(f"unknown split in --model-for: {sorted(unknown)}")
    if args.write_splits:
        write_splits(args.data, args.write_splits, args.seed)
    res = run(
        args.model,
        args.data,
        args.out,
        args.seed,
        model_for,
        args.split,
        not args.no_pooled,
        args.threads,
        args.lightgbm_from,
        not args.no_lightgbm,
    )
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
