"""Adapt an artifact to a new site with that site's own events.

    python -m riskstream_models.adapt --model DIR --data FILE --out DIR [--entity COL --time COL]
    riskstream adapt --model DIR --from-log [DATABASE_URL] --out DIR   # the service's events table

Labels come from the local events by the training rules: AKI onset from the logged creatinine
(KDIGO: +0.3 mg/dL over the 48 h minimum, or 1.5 x the 168 h minimum; `data.make_labels`), and
sepsis only if the table has a `SepsisLabel` column (otherwise the sepsis output is left exactly
as it was). The local entities are split (seeded) into fine-tune / validation / calibration parts;
then, per output with labels:
1. fine-tune its head (the recurrent layers and the memory stay as they are, so the state layout
   and every other output are unchanged) on the fine-tune part, early-stopped on the validation
   part's AUPRC, where "no change" competes as epoch 0;
2. for an ensemble artifact (trees over the memory), re-pick the network/trees blend weight on the
   validation part (the trees are kept as they are);
3. refit the order-keeping calibration (interpolated isotonic) on the calibration part;
4. re-pick the alert thresholds there: `raise` at 33% hour-level precision, `clear` at 25%.
The result is a normal artifact (same inputs, outputs and states; the service loads it with
MODEL_DIR) whose manifest records the base model, the local data's fingerprint and these figures
under `adaptation`. The honest measure of what it buys is `pseudosite_adapt.py`: a pseudo-site's
held-out patients the adaptation never saw.
"""

from __future__ import annotations

import argparse
import datetime as dt_
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from sklearn.metrics import average_precision_score, roc_auc_score

from .data import EventTable, load_events, make_labels, split_entities
from .dataset import derived_features, length_batches
from .export import export, knots_from_doc, manifest
from .metrics import threshold_at_precision
from .model import ModelConfig, RiskModel, calibrate
from .train import isotonic_knots

# buffers that follow from the config, or that the calibration refit replaces
_DERIVED = {"memory.slot", "calib_x", "calib_y", "platt"}
FRACTIONS = (0.7, 0.15, 0.15, 0.0)  # fine-tune / validation / calibration / (none)


class Artifact:
    """An artifact rebuilt for adaptation: the torch network (weights read from model.onnx,
    config and calibration knots from the manifest), and for an ensemble its trees (as ONNX)
    and blend weights."""

    def __init__(self, model_dir: str | Path):
        from .ensemble import trees_from_artifact

        self.dir = Path(model_dir)
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        cell = self.manifest["cell"]
        conf = dict(cell.get("config") or {})
        if not conf:
            raise ValueError(
                f"{model_dir}: the manifest has no cell.config (an artifact exported before "
                "`adapt` existed, or several networks averaged): re-export it to adapt it"
            )
        knots = conf.pop("calibration_knots", None)
        conf["aux"], conf["input_dropout"] = [], 0.0  # training-only parts
        cfg = ModelConfig(features=[f["name"] for f in self.manifest["features"]], **conf)
        self.model = RiskModel(cfg).eval()
        graph = onnx.load(str(self.dir / "model.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
        sd = self.model.state_dict()
        missing = []
        for k in sd:
            v = inits.get(f"model.{k}")  # export wraps the network as `model`
            if v is not None and tuple(v.shape) == tuple(sd[k].shape):
                sd[k] = torch.from_numpy(v.copy()).to(sd[k].dtype)
            elif k not in _DERIVED:
                missing.append(k)
        if missing:
            raise ValueError(f"{model_dir}: weights not found in model.onnx: {missing}")
        self.model.load_state_dict(sd)
        K, n = len(cfg.outputs), cfg.calib_knots
        if knots is None:
            raise ValueError(f"{model_dir}: the manifest has no calibration knots")
        self.xk, self.yk = knots_from_doc(knots, cfg.outputs, n)
        ens = cell.get("ensemble")
        self.trees = trees_from_artifact(self.dir / "model.onnx") if ens else None
        self.w = np.array(ens["blend_weight_recurrent"] if ens else [1.0] * K, np.float64)


def split_local(ev: EventTable, seed: int) -> dict[str, np.ndarray]:
    parts = split_entities(ev.entities(), seed, FRACTIONS)
    ents = ev.entities()
    out = {k: np.flatnonzero(np.isin(ents, parts[k])) for k in ("train", "val", "calib")}
    empty = [k for k, v in out.items() if len(v) == 0]
    if empty:
        raise ValueError(f"too few entities ({len(ents)}) to adapt: no {empty} part")
    return out


@torch.no_grad()
def head_inputs(model: RiskModel, ev: EventTable, d: np.ndarray, batch: int = 256) -> np.ndarray:
    """What the heads read (rows, H [+ D]) for every row of ev, in table order (eval mode)."""
    out = np.zeros((len(ev.time), model.heads[0][0].in_features), np.float32)
    n_rec = len(model.cfg.state_names()) - int(model.cfg.memory)
    for b in length_batches(ev, np.arange(len(ev.starts) - 1), batch):
        a, n = ev.starts[b], np.diff(ev.starts)[b]
        steps = np.arange(int(n.max()))[:, None]
        valid = steps < n[None, :]
        rows = np.where(valid, a[None, :] + steps, 0)
        x = torch.from_numpy(d[rows] * valid[..., None])
        top, _ = model.trunk(x, model.zero_states(len(b))[:n_rec], seq=True)
        out[rows[valid]] = top.numpy()[valid]
    return out


def fine_tune_head(
    model: RiskModel,
    k: int,
    top: np.ndarray,
    y: np.ndarray,
    rows: dict[str, np.ndarray],
    score,
    epochs: int,
    lr: float,
    patience: int,
    seed: int,
) -> list[dict]:
    """Fine-tune head k on rows["train"] (class-weighted BCE as in training), keeping the
    weights of the epoch with the best score(rows["val"] logits) — epoch 0 = unchanged."""
    head = model.heads[k]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(top[rows["train"]]), torch.from_numpy(y[rows["train"]])
    xv = torch.from_numpy(top[rows["val"]])

    def val() -> float:
        head.eval()
        with torch.no_grad():
            return float(score(head(xv)[:, 0].numpy()))

    best, best_state, bad = val(), {n: v.clone() for n, v in head.state_dict().items()}, 0
    history = [{"epoch": 0, "val_auprc": best}]
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    pos_weight = 4.0 if k == 0 else 1.0  # the trainer's class weights
    for epoch in range(1, epochs + 1):
        head.train()
        order = rng.permutation(len(xt))
        for i in range(0, len(order), 512):
            j = torch.from_numpy(order[i : i + 512])
            yb = yt[j]
            w = 1 + (pos_weight - 1) * yb
            loss = (F.binary_cross_entropy_with_logits(head(xt[j])[:, 0], yb, weight=w)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = val()
        history.append({"epoch": epoch, "val_auprc": v})
        if v > best:
            best, bad = v, 0
            best_state = {n: t.clone() for n, t in head.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return history


def alert_thresholds(y: np.ndarray, p: np.ndarray) -> list[float]:
    """[raise, clear] for ALERT_THRESHOLDS: the risks at 33% and at 25% hour-level precision."""
    up, down = threshold_at_precision(y, p, 1 / 3), threshold_at_precision(y, p, 1 / 4)
    up = up if np.isfinite(up) else 1.0
    down = down if np.isfinite(down) else up
    return [round(float(up), 6), round(float(min(down, up)), 6)]


def adapt(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    entity: str = "patient_id",
    time_col: str = "hour",
    name: str | None = None,
    version: str | None = None,
    seed: int = 0,
    epochs: int = 20,
    lr: float = 1e-3,
    patience: int = 3,
) -> dict:
    from .ensemble import Blend, build_graph, parity, tree_probabilities

    t0 = time.time()
    art = Artifact(model_dir)
    model, cfg, base = art.model, art.model.cfg, art.manifest
    ev = load_events(data, entity, time_col, cfg.features)
    aki, keep, _ = make_labels(ev)
    labels: dict[int, tuple[np.ndarray, np.ndarray]] = {0: (aki, keep)}
    if ev.sepsis is not None:
        labels[1] = (ev.sepsis, np.ones(len(ev.time), bool))
    parts = split_local(ev, seed)
    rows = {k: ev.rows(v) for k, v in parts.items()}
    d = derived_features(model, ev, np.arange(len(ev.starts) - 1))
    top = head_inputs(model, ev, d)
    q = tree_probabilities(art.trees, d) if art.trees is not None else None
    w = art.w.copy()
    xk, yk = art.xk.copy(), art.yk.copy()
    figures: dict = {}
    for k, (y, m) in labels.items():
        out_name = cfg.outputs[k]
        r = {s: v[m[v]] for s, v in rows.items()}
        if any(len(np.unique(y[v])) < 2 for v in r.values()):
            figures[out_name] = {"skipped": "a part has no positive or no negative hour"}
            continue
        qk = None
        if q is not None:  # the trees' logit, as the graph's blend computes it
            qc = np.clip(q[k], 1e-6, 1 - 1e-6)
            qk = np.log(qc / (1 - qc))

        def blend_at(z: np.ndarray, rr: np.ndarray, wk: float, qk=qk) -> np.ndarray:
            return z if qk is None else wk * z + (1 - wk) * qk[rr]

        def z_of(rr: np.ndarray, k=k) -> np.ndarray:
            with torch.no_grad():
                return model.heads[k](torch.from_numpy(top[rr]))[:, 0].numpy()

        yv = y[r["val"]]
        before = blend_at(z_of(r["val"]), r["val"], w[k])
        fig = {"val_before": _rank(yv, before)}
        history = fine_tune_head(
            model,
            k,
            top,
            y,
            r,
            lambda z, rv=r["val"], wk=w[k], yv=yv: average_precision_score(yv, blend_at(z, rv, wk)),
            epochs,
            lr,
            patience,
            seed,
        )
        zv = z_of(r["val"])
        if qk is not None:  # the blend weight again, on the fine-tuned head
            grid = {
                float(a): average_precision_score(yv, blend_at(zv, r["val"], a))
                for a in np.linspace(0, 1, 11)
            }
            w[k] = max(grid, key=grid.__getitem__)
        zc = blend_at(z_of(r["calib"]), r["calib"], w[k])
        xs, ys = isotonic_knots(zc, y[r["calib"]], cfg.calib_knots)
        xk[k], yk[k] = xs, ys
        pc = calibrate(
            torch.from_numpy(zc[:, None].astype(np.float32)),
            "isotonic",
            torch.tensor(xs[None], dtype=torch.float32),
            torch.tensor(ys[None], dtype=torch.float32),
            None,
        )[:, 0].numpy()
        fig.update(
            val_after=_rank(yv, blend_at(zv, r["val"], w[k])),
            fine_tune_epochs=history,
            best_epoch=max(history, key=lambda h: h["val_auprc"])["epoch"],
            blend_weight_recurrent=float(w[k]) if qk is not None else None,
            alert_thresholds=alert_thresholds(y[r["calib"]], pc),
            calib_hours=len(r["calib"]),
        )
        figures[out_name] = fig
        print(
            f"{out_name}: {json.dumps({a: b for a, b in fig.items() if a != 'fine_tune_epochs'})}"
        )

    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    name = name or base["name"]
    version = version or f"{base['version']}-adapted"
    training = {
        **base.get("training_data", {}),
        "adapted_on": {"file": str(data), "fingerprint": ev.fingerprint, "rows": len(ev.time)},
    }
    check = _check_table(ev)
    path = outdir / "model.onnx"
    if art.trees is None:
        model.calib_x.copy_(torch.from_numpy(xk))
        model.calib_y.copy_(torch.from_numpy(yk))
        model.cfg.calibration = "isotonic"
        man = export(model, outdir, name, version, training, {}, check)
    else:
        blend = Blend(w, xk, yk).eval()
        onnx.save(build_graph(model, art.trees, blend), str(path))
        diff = parity(model, art.trees, blend, path, check)
        if not diff <= 1e-5:
            raise RuntimeError(f"export parity failed: {diff:.3g}")
        from .export import knots_doc

        man = manifest(model, name, version, path, training, {})
        man["onnx"]["parity_max_abs_diff"] = diff
        man["cell"]["config"]["calibration_knots"] = knots_doc(cfg.outputs, xk, yk)
        man["cell"]["ensemble"] = {**base["cell"]["ensemble"], "blend_weight_recurrent": list(w)}
    man["adaptation"] = {
        "base_model": {
            "name": base["name"],
            "version": base["version"],
            "sha256": base["onnx"]["sha256"],
        },
        "data": {
            "file": str(data),
            "fingerprint": ev.fingerprint,
            "entities": len(ev.starts) - 1,
            "rows": len(ev.time),
            "split": {
                "seed": seed,
                "fractions": dict(zip(("fine_tune", "val", "calib"), FRACTIONS, strict=False)),
            },
        },
        "method": "head fine-tuning (recurrent layers and memory frozen), blend weight and "
        "interpolated isotonic calibration refitted; labels by the training rules (KDIGO from "
        "logged creatinine)",
        "figures": figures,
        "seconds": round(time.time() - t0, 1),
        "created": dt_.datetime.now(dt_.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    man["onnx"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (outdir / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    thr = {o: f["alert_thresholds"] for o, f in figures.items() if "alert_thresholds" in f}
    print(
        f"wrote {outdir} ({path.stat().st_size / 1e6:.2f} MB); ALERT_THRESHOLDS='{json.dumps(thr)}'"
    )
    return man


def _rank(y: np.ndarray, s: np.ndarray) -> dict:
    return {
        "auroc": float(roc_auc_score(y, s)),
        "auprc": float(average_precision_score(y, s)),
        "hours": len(y),
    }


def _check_table(ev: EventTable, n: int = 24) -> EventTable:
    """The first n entities of ev: the export parity check's sequences."""
    from .pseudosite import subset

    return subset(ev, np.arange(min(n, len(ev.starts) - 1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="riskstream adapt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", required=True, help="the artifact to adapt (model.onnx + manifest)")
    ap.add_argument("--data", required=True, help="the site's event table (Parquet or CSV)")
    ap.add_argument("--out", required=True, help="folder for the adapted artifact")
    ap.add_argument("--entity", default="patient_id", help="entity id column")
    ap.add_argument("--time", default="hour", help="time column: numeric hours or datetimes")
    ap.add_argument("--name", help="artifact name (default: the base model's)")
    ap.add_argument("--version", help="artifact version (default: <base version>-adapted)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the local split")
    ap.add_argument("--epochs", type=int, default=20, help="most fine-tuning epochs")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    try:
        adapt(
            args.model,
            args.data,
            args.out,
            args.entity,
            args.time,
            args.name,
            args.version,
            args.seed,
            args.epochs,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"riskstream adapt: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
