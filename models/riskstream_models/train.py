"""Train a RiskModel on an event table, calibrate it, export it.

    python -m riskstream_models.train --config models/configs/aki-lstm.json
    python -m riskstream_models.train --config models/configs/aki-lstm.json \
        --set model.memory=false --out runs/no-memory        # an ablation row, not exported

Steps: load the events and labels, split patients (train/val/calib/test, fixed seed), fit the
in-graph normalisation on train, compute the derived features once (the memory has no weights),
train with truncated BPTT and early stopping on validation AKI AUPRC, fit isotonic calibration on
the calib split, then (if `export` is set) export one ONNX step and evaluate it on the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm import tqdm

from .checkpoint import export_checkpoint
from .data import FEATURES, aki_labels, load_events, make_labels, measured_share
from .dataset import derived_features, fit_normalisation, length_batches
from .metrics import aki_report
from .model import ModelConfig, RiskModel, n_params

DEFAULTS = {
    "data": {
        "path": "/work/shared/data/physionet2019/setA.parquet",
        "entity": "patient_id",
        "time": "hour",
        "name": "PhysioNet/CinC 2019 training set A",
        "split_seed": 0,
        "subsample": 1.0,
        # inputs measured in under this share of the training split's hours are ignored by the
        # model (model.ignored_features, listed in the manifest); 0 = ignore none
        "ignore_below": 0.0,
        # a pseudo-site's training side (`pseudosite --write-splits DIR` -> DIR/<split>.json):
        # train/val/calib keep only its patients, to retrain the network without the held-out
        # group; the test split is unchanged (pseudosite evaluates the held-out part of it)
        "site_split": None,
    },
    "model": {},
    "train": {
        "seed": 0,
        "epochs": 30,
        "patience": 4,
        "batch": 64,
        "tbptt": 96,
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "ema": 0.0,
        "aki_pos_weight": 4.0,
        "sepsis_weight": 0.5,
        "clip": 1.0,
        "distill": None,  # alpha: AKI target alpha * teacher + (1 - alpha) * label
        "distill_sepsis": None,  # the same for sepsis
        "teacher": "runs/teacher/oof.npz",  # out-of-fold teacher probabilities (distill.py)
    },
    "out": "runs/aki-lstm",
    # {"dir": "models/aki-lstm/1.0.0", "name": "aki-lstm", "version": "1.0.0"}
    # (`python -m riskstream_models.ensemble --config` exports trees + network instead)
    "export": None,
}


def load_config(path: str | None, overrides: list[str]) -> dict:
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        for k, v in json.loads(Path(path).read_text()).items():
            cfg[k] = {**cfg[k], **v} if isinstance(cfg.get(k), dict) else v
    for o in overrides:  # section.key=json-value
        key, val = o.split("=", 1)
        sec, _, name = key.partition(".")
        with contextlib.suppress(json.JSONDecodeError):
            val = json.loads(val)
        if name:
            cfg[sec][name] = val
        else:
            cfg[sec] = val
    return cfg


def rarely_measured(data: dict, features: list[str]) -> list[str]:
    """The features measured in under data["ignore_below"] of the training split's hours."""
    d = data
    ev = load_events(d["path"], d["entity"], d["time"], features)
    rows = ev.rows(ev.split(d["split_seed"])["train"])
    share = measured_share(ev, rows)
    return [f for f in features if share[f] < d["ignore_below"]]


class Prepared:
    """Events, labels, splits and cached derived features for one data set + memory config."""

    def __init__(self, cfg: dict, model: RiskModel):
        d = cfg["data"]
        self.ev = load_events(d["path"], d["entity"], d["time"], model.cfg.features)
        self.aki, self.keep, self.onset = make_labels(self.ev)
        self.sepsis = self.ev.sepsis if self.ev.sepsis is not None else np.zeros_like(self.aki)
        self.split = self.ev.split(d["split_seed"])
        if d.get("site_split"):
            side = json.loads(Path(d["site_split"]).read_text())
            ents = self.ev.entities()
            for k in ("train", "val", "calib"):
                self.split[k] = self.split[k][np.isin(ents[self.split[k]], side[k])]
        if d["subsample"] < 1.0:  # a reduced training budget for comparison rows
            rng = np.random.default_rng(d["split_seed"])
            tr = self.split["train"]
            self.split["train"] = np.sort(rng.choice(tr, int(len(tr) * d["subsample"]), False))
        fit_normalisation(model, self.ev, self.split["train"])
        self.d = self.cached_features(model)
        if model.cfg.aux:
            self.aux_y, self.aux_w = aux_targets(self.ev, model.cfg.aux, self.keep)
        tc = cfg["train"]
        self.distill = tc.get("distill") is not None or tc.get("distill_sepsis") is not None
        self.teacher_folds = 0
        if self.distill:  # soft training targets (class weights stay those of the labels)
            t = np.load(tc["teacher"])
            self.teacher_folds = int(t["folds"])
            assert str(t["fingerprint"]) == self.ev.fingerprint, "teacher for another table"
            assert int(t["split_seed"]) == d["split_seed"], "teacher for another split"
            rows = self.ev.rows(self.split["train"])
            a, s = tc.get("distill") or 0.0, tc.get("distill_sepsis") or 0.0
            self.soft_aki = soft_targets(self.aki, t["aki"], a, rows)
            self.soft_sepsis = soft_targets(self.sepsis, t["sepsis"], s, rows) if s else self.sepsis

    def gather(self, idx: np.ndarray, v: np.ndarray) -> torch.Tensor:
        """Rows of v (N, ...) for entities idx -> (T, B, ...) zero-padded."""
        a, n = self.ev.starts[idx], np.diff(self.ev.starts)[idx]
        steps = np.arange(int(n.max()))[:, None]
        valid = steps < n[None, :]
        rows = np.where(valid, a[None, :] + steps, 0)
        out = v[rows] * valid.reshape(valid.shape + (1,) * (v.ndim - 1))
        return torch.from_numpy(out.astype(np.float32))

    def cached_features(self, model: RiskModel) -> np.ndarray:
        mem = model.memory
        key = hashlib.sha256(self.ev.fingerprint.encode())
        memory_keys = (
            "features",
            "memory",
            "key_labs",
            "ring_hours",
            "ema_hours",
            "key_windows",
            "ignored_features",
        )
        mcfg = {k: v for k, v in model.cfg.to_dict().items() if k in memory_keys and v != []}
        key.update(json.dumps(mcfg, sort_keys=True).encode())
        for b in (mem.x_mean, mem.x_std, mem.d_mean, mem.d_std):
            key.update(b.numpy().tobytes())
        path = Path("runs/cache") / f"derived-{key.hexdigest()[:16]}.npy"
        if path.exists():
            return np.load(path)
        t0 = time.time()
        d = derived_features(model, self.ev, np.arange(len(self.ev.starts) - 1))
        print(f"derived features {d.shape} in {time.time() - t0:.0f} s")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, d)
        return d

    def batch(self, idx: np.ndarray):
        """Entities idx -> d (T, B, D), aki, keep, sepsis, valid (T, B)."""
        a, n = self.ev.starts[idx], np.diff(self.ev.starts)[idx]
        T = int(n.max())
        steps = np.arange(T)[:, None]
        valid = steps < n[None, :]  # (T, B)
        rows = np.where(valid, a[None, :] + steps, 0)
        t = lambda v: torch.from_numpy(np.where(valid, v[rows], 0).astype(np.float32))  # noqa: E731
        d = torch.from_numpy(self.d[rows] * valid[..., None])
        return (
            d,
            t(self.aki),
            t(self.keep),
            t(self.sepsis),
            torch.from_numpy(valid.astype(np.float32)),
        )


def soft_targets(y: np.ndarray, teacher: np.ndarray, alpha: float, rows: np.ndarray):
    """Distillation targets: alpha * teacher + (1 - alpha) * y on rows (the training hours,
    which must all have a teacher probability), y elsewhere."""
    assert 0.0 <= alpha <= 1.0 and np.isfinite(teacher[rows]).all()
    out = y.astype(np.float32)
    out[rows] = alpha * teacher[rows] + (1 - alpha) * y[rows]
    return out


def aux_targets(ev, names: list[str], keep: np.ndarray):
    """Auxiliary targets (N, A) and their masks (N, A), training only.

    akiN: AKI onset within N hours (masked like the main AKI label); creat48: the highest
    creatinine measured in (t, t+48] minus the last creatinine so far, in mg/dL clipped to +-5
    (masked where there is no such pair, and like the AKI label). The loss weight of each is
    train.aux_weight (0.5 if unset)."""
    ci = ev.features.index("Creatinine")
    y = np.zeros((len(ev.time), len(names)), np.float32)
    w = np.zeros_like(y)
    for a, b in zip(ev.starts[:-1], ev.starts[1:], strict=False):
        t, c = ev.time[a:b], ev.x[a:b, ci].astype(np.float64)
        for j, name in enumerate(names):
            if name.startswith("aki"):
                y[a:b, j] = aki_labels(t, c, float(name[3:]))[0]
                w[a:b, j] = keep[a:b]
            elif name == "creat48":
                obs = ~np.isnan(c)
                idx = np.where(obs, np.arange(len(c)), -1)
                idx = np.maximum.accumulate(idx)
                last = np.where(idx >= 0, c[np.maximum(idx, 0)], np.nan)
                fut = np.full(len(c), np.nan)
                oi = np.flatnonzero(obs)
                for i in range(len(c)):
                    sel = oi[(t[oi] > t[i]) & (t[oi] <= t[i] + 48)]
                    if len(sel):
                        fut[i] = c[sel].max()
                ok = ~np.isnan(fut) & ~np.isnan(last)
                y[a:b, j] = np.where(ok, np.clip(fut - last, -5, 5), 0)
                w[a:b, j] = ok & keep[a:b]
    return y, w


def bce(logit, y, mask, pos_weight=1.0, target=None):
    """Class-weighted BCE; the weights follow the label y, the target is y unless given (soft)."""
    w = mask * (1 + (pos_weight - 1) * y)
    target = y if target is None else target
    return (F.binary_cross_entropy_with_logits(logit, target, reduction="none") * w).sum()


def train_epoch(model, prep, opt, tc, rng, ema=None):
    model.train()
    batches = length_batches(prep.ev, prep.split["train"], tc["batch"], rng)
    bar = tqdm(batches, desc="train", leave=False, mininterval=2)
    run = 0.0
    for i, idx in enumerate(bar):
        d, aki, keep, sep, valid = prep.batch(idx)
        soft_aki, soft_sep = aki, sep
        if prep.distill:
            soft_aki, soft_sep = prep.gather(idx, prep.soft_aki), prep.gather(idx, prep.soft_sepsis)
        if model.cfg.aux:
            ay, aw = prep.gather(idx, prep.aux_y), prep.gather(idx, prep.aux_w)
        states = model.zero_states(d.shape[1])[: len(model.cfg.state_names()) - model.cfg.memory]
        for s in range(0, d.shape[0], tc["tbptt"]):  # truncated back-propagation through time
            sl = slice(s, s + tc["tbptt"])
            top, states = model.trunk(d[sl], states, seq=True)
            logits = model.logits(top)
            states = [st.detach() for st in states]
            loss = bce(logits[..., 0], aki[sl], keep[sl], tc["aki_pos_weight"], soft_aki[sl])
            loss = loss + tc["sepsis_weight"] * bce(
                logits[..., 1], sep[sl], valid[sl], target=soft_sep[sl]
            )
            if model.cfg.aux:
                za, ya, wa = model.aux_head(top), ay[sl], aw[sl]
                for j, name in enumerate(model.cfg.aux):
                    if name.startswith("aki"):
                        la = bce(za[..., j], ya[..., j], wa[..., j], tc["aki_pos_weight"])
                    else:
                        la = (
                            F.smooth_l1_loss(za[..., j], ya[..., j], reduction="none") * wa[..., j]
                        ).sum()
                    loss = loss + tc.get("aux_weight", 0.5) * la
            loss = loss / valid.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc["clip"])
            opt.step()
            if ema is not None:  # exponential moving average of the weights
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        ema[n].lerp_(p, 1 - tc["ema"])
            run = 0.98 * run + 0.02 * loss.item() if i or s else loss.item()
        bar.set_postfix(loss=f"{run:.4f}")
    return run


@torch.no_grad()
def logits_for(model, prep, idx, batch=512) -> tuple[np.ndarray, np.ndarray]:
    """Logits (rows, K) for entities idx, and the row ids they belong to."""
    model.eval()
    out, rows = [], []
    for b in length_batches(prep.ev, idx, batch):
        d, *_, valid = prep.batch(b)
        z, _ = model.network(
            d,
            model.zero_states(len(b))[: len(model.cfg.state_names()) - model.cfg.memory],
            seq=True,
        )
        out.append(z.transpose(0, 1)[valid.T.bool()].numpy())
        rows.append(prep.ev.rows(b))
    return np.concatenate(out), np.concatenate(rows)


def quick_metrics(model, prep, split) -> dict:
    z, rows = logits_for(model, prep, prep.split[split])
    keep = prep.keep[rows]
    y, s = prep.aki[rows][keep], prep.sepsis[rows]
    return {
        "aki_auprc": average_precision_score(y, z[keep, 0]),
        "aki_auroc": roc_auc_score(y, z[keep, 0]),
        "sepsis_auroc": roc_auc_score(s, z[:, 1]) if s.any() else float("nan"),
    }


def test_report(model, prep) -> dict:
    """AKI report on the test split from the torch logits: AUROC, AUPRC, episodes and alert rate
    at 33% precision are ranking-based, so they equal the calibrated ONNX figures (no ECE here)."""
    z, rows = logits_for(model, prep, prep.split["test"])
    order = np.argsort(rows)
    z, rows, ev = z[order], rows[order], prep.ev
    rep = aki_report(
        z[:, 0], prep.aki[rows], prep.keep[rows], ev.entity[rows], ev.time[rows], prep.onset[rows]
    )
    rep.pop("ece")
    rep.pop("threshold_at_precision_33")
    return rep


def isotonic_knots(
    z: np.ndarray, y: np.ndarray, knots: int, min_gap: float = 0.02, tail: float = 8.0
):
    """Interpolated isotonic regression of y on the logit z: `knots` knots (xs, ys), strictly
    increasing in both, for the in-graph piecewise-linear calibration.

    A plain isotonic fit is a step function: it maps ranges of scores to one value, so different
    risks show as the same percentage and their order is lost. Here candidate knots sit at
    quantiles of z at least `min_gap` apart (the slope stays bounded, float noise in z is not
    amplified); each run of knots on one isotonic step is replaced by one knot at the run's
    middle, so interpolating between the steps' middles is strictly increasing. Values are kept
    strictly inside (0, 1), and a knot `tail` logits beyond each end (halfway to 0 and to 1)
    keeps the function increasing past the calibration data. Padded by repeating the last knot
    (zero-width segments add nothing)."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, y)
    cand = [float(np.min(z))]
    for q in np.quantile(z, np.linspace(0, 1, knots)):
        if q - cand[-1] >= min_gap:
            cand.append(float(q))
    cand_x = np.array(cand)
    cand_y = iso.predict(cand_x)
    xs: list[float] = []
    ys: list[float] = []
    i = 0
    while i < len(cand_x):  # one knot per isotonic step: the middle of its run of candidates
        j = i
        while j + 1 < len(cand_x) and cand_y[j + 1] == cand_y[i]:
            j += 1
        xs.append(0.5 * (cand_x[i] + cand_x[j]))
        ys.append(float(cand_y[i]))
        i = j + 1
    keep = knots - 2
    if len(xs) > keep:  # thin evenly, always keeping both ends
        pick = np.unique(np.round(np.linspace(0, len(xs) - 1, keep)).astype(int))
        xs, ys = [xs[k] for k in pick], [ys[k] for k in pick]
    eps = 1e-3
    yv = np.asarray(ys) * (1 - 2 * eps) + eps
    xv = np.r_[xs[0] - tail, xs, xs[-1] + tail]
    yv = np.r_[yv[0] / 2, yv, (yv[-1] + 1) / 2]
    pad = knots - len(xv)
    return np.r_[xv, np.full(pad, xv[-1])], np.r_[yv, np.full(pad, yv[-1])]


def calibrate(model, prep, knots: int) -> None:
    """Fit interpolated isotonic calibration (strictly increasing) of every output on the calib
    split and store it in the graph."""
    z, rows = logits_for(model, prep, prep.split["calib"])
    keep = prep.keep[rows]
    for k, (zz, y) in enumerate([(z[keep, 0], prep.aki[rows][keep]), (z[:, 1], prep.sepsis[rows])]):
        xs, ys = isotonic_knots(zz, y, knots)
        model.calib_x[k] = torch.tensor(xs, dtype=torch.float32)
        model.calib_y[k] = torch.tensor(ys, dtype=torch.float32)
    model.cfg.calibration = "isotonic"


def run(cfg: dict) -> dict:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tc = cfg["train"]
    torch.manual_seed(tc["seed"])
    rng = np.random.default_rng(tc["seed"])
    if cfg["data"].get("ignore_below", 0.0) > 0 and "ignored_features" not in cfg["model"]:
        cfg["model"]["ignored_features"] = rarely_measured(cfg["data"], FEATURES)
        print("ignored (rarely measured in training hours):", cfg["model"]["ignored_features"])
    model = RiskModel(ModelConfig(features=FEATURES, **cfg["model"]))
    t0 = time.time()
    prep = Prepared(cfg, model)
    print(
        f"prepared in {time.time() - t0:.0f} s; {n_params(model):,} parameters; "
        f"splits " + ", ".join(f"{k} {len(v)}" for k, v in prep.split.items())
    )
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "max", factor=0.5, patience=1)
    best, best_state, bad, history = -1.0, None, 0, []
    t_train = time.time()
    ema = None
    if tc.get("ema"):
        ema = {n: p.detach().clone() for n, p in model.named_parameters()}
    for epoch in range(tc["epochs"]):
        te = time.time()
        loss = train_epoch(model, prep, opt, tc, rng, ema)
        if ema is not None:  # evaluate (and keep) the averaged weights
            live = {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict({**live, **ema})
        m = quick_metrics(model, prep, "val")
        history.append({"epoch": epoch + 1, "loss": loss, **m, "seconds": time.time() - te})
        sched.step(m["aki_auprc"])
        flag = "*" if m["aki_auprc"] > best else ""
        print(
            f"epoch {epoch + 1:2d} loss {loss:.4f} val AKI AUPRC {m['aki_auprc']:.4f} "
            f"AUROC {m['aki_auroc']:.4f} sepsis AUROC {m['sepsis_auroc']:.4f} "
            f"({time.time() - te:.0f} s) {flag}",
            flush=True,
        )
        if m["aki_auprc"] > best:
            best, bad = m["aki_auprc"], 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if ema is not None:
            model.load_state_dict(live)
        if bad >= tc["patience"]:
            break
    model.load_state_dict(best_state)
    train_seconds = time.time() - t_train
    calibrate(model, prep, model.cfg.calib_knots)
    result = {
        "config": cfg,
        "params": n_params(model),
        "train_seconds": train_seconds,
        "history": history,
        "val": quick_metrics(model, prep, "val"),
        "test": quick_metrics(model, prep, "test"),
        "test_aki": test_report(model, prep),
    }
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model_config": model.cfg.to_dict(),
            "state_dict": model.state_dict(),
            "cfg": cfg,
            "training_data": training_data(cfg, prep),
        },
        out / "model.pt",
    )
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")
    print("test (torch, uncalibrated logits ranking):", json.dumps(result["test"]))
    if cfg["export"]:
        e = cfg["export"]
        result["evaluation"] = export_checkpoint(
            out / "model.pt", e["dir"], e["name"], e["version"]
        )
    (out / "result.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


def training_data(cfg: dict, prep: Prepared) -> dict:
    d = cfg["data"]
    out = {
        "name": d["name"],
        "fingerprint": prep.ev.fingerprint,
        "rows": len(prep.ev.time),
        "entities": len(prep.ev.starts) - 1,
        "split": {
            "seed": d["split_seed"],
            "fractions": {"train": 0.6, "val": 0.15, "calib": 0.1, "test": 0.15},
        },
        "train_entities": len(prep.split["train"]),
    }
    if prep.distill:
        tc = cfg["train"]
        out["distillation"] = {  # the training targets only; the graph is the same
            "teacher": "LightGBM on the baseline's history features, out of fold over "
            f"{prep.teacher_folds} patient folds of the train split (distill.py)",
            "aki_48h_alpha": tc.get("distill"),
            "sepsis_alpha": tc.get("distill_sepsis"),
        }
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", help="JSON with sections data, model, train, out, export")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    run(load_config(args.config, args.set))


if __name__ == "__main__":
    main()
