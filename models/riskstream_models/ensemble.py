"""Trees over the feature memory inside the same ONNX step, blended with the recurrent heads.

    python -m riskstream_models.ensemble --checkpoint runs/aki-lstm/model.pt \
        --out models/aki-lstm-gbm/1.0.0 --name aki-lstm-gbm --version 1.0.0
    python -m riskstream_models.ensemble --config models/configs/aki-lstm-gbm.json  # + training

One LightGBM per output is trained on the model's derived features d (the memory-derived
features the recurrent layers see, computed by the same graph). The exported step is

    (x, dt, h, c, m) -> RiskModel step -> logits z [B, K], d [B, D], h_next, c_next, m_next
                     d -> LightGBM (ONNX-ML TreeEnsembleClassifier, via onnxmltools) -> q [B, K]
    z, q -> w * z + (1 - w) * logit(q) -> isotonic calibration (calib split) -> risk [B, K]

with the blend weight w per output chosen on the validation split. Same inputs, outputs and states
as the recurrent model, so the service loads it like any other artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import compose
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.metrics import average_precision_score

from .baselines import fit_lgb
from .checkpoint import load_checkpoint
from .data import SAMPLE, load_events
from .evaluate import evaluate
from .export import OPSET, knots_doc, manifest, onnx_rollout
from .model import RiskModel, calibrate
from .train import Prepared, isotonic_knots, logits_for


def float32_thresholds(booster: lgb.Booster) -> lgb.Booster:
    """Round every split threshold down to a float32 (the ONNX tree ops compare in float32).

    Features are float32, so `x <= t` and `x <= floor32(t)` agree for every input: LightGBM and
    the exported trees then take the same branches."""

    def down(m: re.Match) -> str:
        t = np.array([float(v) for v in m.group(1).split()])
        f = t.astype(np.float32)
        f = np.where(f > t, np.nextafter(f, np.float32(-np.inf)), f)
        return "threshold=" + " ".join(repr(float(v)) for v in f)

    text = re.sub(r"threshold=([^\n]*)", down, booster.model_to_string())
    text = re.sub(r"tree_sizes=[^\n]*\n", "", text)  # byte offsets no longer valid
    out = lgb.Booster(model_str=text)
    out.best_iteration = out.current_iteration()
    return out


class StepParts(nn.Module):
    """(x, dt, *states) -> (z, d, *next_states): the recurrent step before calibration."""

    def __init__(self, model: RiskModel):
        super().__init__()
        self.model = model

    def forward(self, x, dt, *states):
        z, d, nxt = self.model.step_logits(x, dt, list(states))
        return (z, d, *nxt)


class Blend(nn.Module):
    """(z [B, K] logits, q_k [B, 2] tree probabilities per output) -> calibrated risk [B, K]."""

    def __init__(self, w: np.ndarray, xk: np.ndarray, yk: np.ndarray):
        super().__init__()
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))  # (K,)
        self.register_buffer("xk", torch.tensor(xk, dtype=torch.float32))  # (K, N)
        self.register_buffer("yk", torch.tensor(yk, dtype=torch.float32))

    def blend(self, z, q):  # z, q (B, K)
        q = q.clamp(1e-6, 1 - 1e-6)
        return self.w * z + (1 - self.w) * torch.log(q / (1 - q))

    def forward(self, z, *q):
        zb = self.blend(z, torch.stack([p[:, 1] for p in q], dim=1))
        return calibrate(zb, "isotonic", self.xk, self.yk, None)


def to_onnx(module: nn.Module, args, inputs, outputs, dynamic) -> onnx.ModelProto:
    path = Path("runs/tmp-ensemble.onnx")
    path.parent.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    return onnx.load(str(path))


def trees_from_artifact(path: str | Path) -> onnx.ModelProto:
    """The trees of an ensemble artifact as their own graph: `d` -> `t{k}_probabilities`.

    `adapt` rebuilds an ensemble step around them (new network weights, blend and calibration)
    without the LightGBM boosters, which the artifact does not carry."""
    g = onnx.load(str(path))
    qs = sorted(
        {o for n in g.graph.node for o in n.output if re.fullmatch(r"t\d+_probabilities", o)}
    )
    if not qs:
        raise ValueError(f"{path}: no trees (t<k>_probabilities) in this graph")
    return onnx.utils.Extractor(g).extract_model(["d"], qs)


def tree_probabilities(trees: list | onnx.ModelProto, d: np.ndarray) -> list[np.ndarray]:
    """Per output the trees' probability of class 1 for derived features d (rows, D)."""
    if isinstance(trees, onnx.ModelProto):
        import onnxruntime as ort

        sess = ort.InferenceSession(trees.SerializeToString(), providers=["CPUExecutionProvider"])
        return [q[:, 1] for q in sess.run(None, {"d": d.astype(np.float32)})]
    return [t.predict(d) for t in trees]


def build_graph(model: RiskModel, trees: list | onnx.ModelProto, blend: Blend) -> onnx.ModelProto:
    """The one ONNX step; trees are LightGBM boosters (one per output) or, from
    `trees_from_artifact`, an already converted tree graph."""
    cfg = model.cfg
    names, K, D = cfg.state_names(), len(cfg.outputs), cfg.derived_size
    nxt = [f"{n}_next" for n in names]
    B = 2
    states = model.zero_states(B)
    dyn = {n: {0: "batch"} for n in ("x", "dt", "z", "d")}
    dyn.update({n: {1: "batch"} for n in names + nxt})
    g = to_onnx(
        StepParts(model),
        (torch.zeros(B, len(cfg.features)), torch.ones(B, 1), *states),
        ["x", "dt", *names],
        ["z", "d", *nxt],
        dyn,
    )
    qs = [f"t{k}_probabilities" for k in range(K)]
    if isinstance(trees, onnx.ModelProto):
        t = onnx.ModelProto()
        t.CopyFrom(trees)
        t.ir_version = g.ir_version
        g = compose.merge_models(g, t, io_map=[("d", "d")], outputs=["z", *nxt, *qs])
        trees = []
    for k, booster in enumerate(trees):
        t = convert_lightgbm(
            booster,
            initial_types=[("d", FloatTensorType([None, D]))],
            zipmap=False,
            target_opset=15,
        )
        for imp in t.opset_import:  # converter emits opset 9 Mul/Cast/Identity: same in 17
            if imp.domain == "":
                imp.version = OPSET
        t.ir_version = g.ir_version
        keep = ["z", "d", *nxt, *qs[:k]]
        g = compose.merge_models(
            g, t, io_map=[("d", "d")], prefix2=f"t{k}_", outputs=[*keep, qs[k]]
        )
    b = to_onnx(
        blend,
        (torch.zeros(B, K), *[torch.full((B, 2), 0.5)] * K),
        ["z", *qs],
        ["risk"],
        {n: {0: "batch"} for n in ["z", *qs, "risk"]},
    )
    b = compose.add_prefix(b, "blend_")
    b.ir_version = g.ir_version
    g = compose.merge_models(
        g,
        b,
        io_map=[("z", "blend_z"), *[(q, f"blend_{q}") for q in qs]],
        outputs=["blend_risk", *nxt],
    )
    for node in g.graph.node:  # blend_risk -> risk
        node.output[:] = ["risk" if o == "blend_risk" else o for o in node.output]
    out = {o.name: o for o in g.graph.output}
    out["blend_risk"].name = "risk"
    order = ["risk", *nxt]  # the contract's output order
    outs = sorted(g.graph.output, key=lambda o: order.index(o.name))
    del g.graph.output[:]
    g.graph.output.extend(outs)
    onnx.checker.check_model(g)
    return g


@torch.no_grad()
def parity(model, trees, blend, path: Path, ev, n: int = 16) -> float:
    """ONNX step rollout vs torch full sequence + LightGBM (native) on its derived features."""
    from .dataset import length_batches, padded

    idx = length_batches(ev, np.arange(len(ev.starts) - 1), n)[-1]
    x, dt, valid = padded(ev, idx)
    d, _ = model.memory.sequence(x, dt)
    z, _ = model.network(d, model.zero_states(len(idx))[: len(model.cfg.state_names()) - 1], True)
    flat = d.reshape(-1, d.shape[-1]).numpy()
    q = [torch.tensor(np.stack([1 - p, p], 1)) for p in tree_probabilities(trees, flat)]
    ref = blend(z.reshape(-1, z.shape[-1]), *q).reshape(*z.shape).numpy()
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = onnx_rollout(
        sess, model.cfg.state_names(), model.cfg.state_shapes(), x.numpy(), dt.numpy()
    )
    return float(np.abs(got - ref)[valid.numpy()].max())


def run(
    checkpoint: str, out: str, name: str, version: str, weights: list[float | None] | None = None
) -> dict:
    """weights: per output a fixed recurrent blend weight (e.g. chosen on a pseudo-site, see
    models/README.md), or None to pick it on the validation split's AUPRC."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    model, ck = load_checkpoint(checkpoint)
    prep = Prepared(ck["cfg"], model)
    sp = prep.split
    tr, va = (prep.ev.rows(sp[s]) for s in ("train", "val"))
    labels = [(prep.aki, prep.keep), (prep.sepsis, np.ones_like(prep.keep))]
    trees, w, xk, yk = [], [], [], []
    zv, rv = logits_for(model, prep, sp["val"])
    zc, rc = logits_for(model, prep, sp["calib"])
    for k, (y, m) in enumerate(labels):
        a, b = tr[m[tr]], va[m[va]]
        saved = Path(checkpoint).parent / f"trees-{k}.txt"  # reuse trees fitted for this checkpoint
        if not saved.exists():
            booster = fit_lgb(prep.d[a], y[a], prep.d[b], y[b], threads=threads)
            booster.save_model(str(saved), num_iteration=booster.best_iteration)
        booster = float32_thresholds(lgb.Booster(model_file=str(saved)))
        print(f"output {k}: {booster.best_iteration} trees")
        trees.append(booster)
        # blend weight on validation AUPRC, calibration on the calib split
        keep_v, keep_c = m[rv], m[rc]
        qv = np.clip(booster.predict(prep.d[rv[keep_v]]), 1e-6, 1 - 1e-6)
        lv = np.log(qv / (1 - qv))
        scores = {
            wt: average_precision_score(y[rv[keep_v]], wt * zv[keep_v, k] + (1 - wt) * lv)
            for wt in np.linspace(0, 1, 11)
        }
        best = max(scores, key=scores.get)
        if weights and k < len(weights) and weights[k] is not None:
            best = float(weights[k])
        print(
            f"output {k}: val AUPRC by weight "
            + " ".join(f"{a:.1f}:{s:.4f}" for a, s in scores.items())
        )
        w.append(best)
        qc = np.clip(booster.predict(prep.d[rc[keep_c]]), 1e-6, 1 - 1e-6)
        zb = best * zc[keep_c, k] + (1 - best) * np.log(qc / (1 - qc))
        xs, ys = isotonic_knots(zb, y[rc[keep_c]], model.cfg.calib_knots)
        xk.append(xs)
        yk.append(ys)
    blend = Blend(np.array(w), np.stack(xk), np.stack(yk)).eval()
    ens = {
        "trees": "LightGBM over the derived memory features, one per output",
        "n_trees": [t.best_iteration for t in trees],
        "blend_weight_chosen_on": [
            "fixed (export.blend_weight or --blend-weight)"
            if weights and i < len(weights) and weights[i] is not None
            else "validation AUPRC"
            for i in range(len(trees))
        ],
    }
    man = write_artifact(
        model, trees, blend, out, name, version, ck["training_data"], load_events(SAMPLE), ens
    )
    outdir = Path(out)
    d = ck["cfg"]["data"]
    res = evaluate(outdir, d["path"], split="test", seed=d["split_seed"])
    man["evaluation"] = {"split": f"test (seed {d['split_seed']})", **res}
    (outdir / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return res


def write_artifact(
    model: RiskModel,
    trees: list | onnx.ModelProto,
    blend: Blend,
    out: str | Path,
    name: str,
    version: str,
    training: dict,
    check,
    ensemble: dict,
) -> dict:
    """Write model.onnx + manifest.json of an ensemble step after the parity check on `check`
    (an EventTable); the manifest's cell carries what `adapt` needs to rebuild it."""
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "model.onnx"
    onnx.save(build_graph(model, trees, blend), str(path))
    diff = parity(model, trees, blend, path, check)
    print(f"parity max abs diff {diff:.2e}")
    if not diff <= 1e-5:
        raise RuntimeError(f"export parity failed: {diff:.3g}")
    man = manifest(model, name, version, path, training, {})
    man["onnx"]["parity_max_abs_diff"] = diff
    man["cell"]["config"]["calibration_knots"] = knots_doc(
        model.cfg.outputs, blend.xk.numpy(), blend.yk.numpy()
    )
    man["cell"]["ensemble"] = {
        **ensemble,
        "blend_weight_recurrent": [round(float(v), 6) for v in blend.w.numpy()],
    }
    (outdir / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    return man


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a trained network (model.pt)")
    src.add_argument(
        "--config",
        help="train the network first (train.py's config; its export section names the "
        "artifact), then fit the trees and export both: the whole recipe in one command",
    )
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--out", help="artifact folder (default: the config's export.dir)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--version", default=None)
    ap.add_argument(
        "--blend-weight",
        action="append",
        default=[],
        metavar="OUTPUT=W",
        help="fix an output's recurrent blend weight (else chosen on validation AUPRC)",
    )
    args = ap.parse_args(argv)
    fixed: dict = {}
    checkpoint, e = args.checkpoint, {}
    if args.config:
        from .train import load_config
        from .train import run as train

        cfg = load_config(args.config, args.set)
        e = cfg["export"] or {}
        cfg["export"] = None  # the network alone is not exported
        train(cfg)
        checkpoint = str(Path(cfg["out"]) / "model.pt")
        for old in Path(cfg["out"]).glob("trees-*.txt"):  # fitted for an earlier checkpoint
            old.unlink()
    # the config's export.blend_weight {output: w}, then --blend-weight OUTPUT=W on top
    fixed.update(e.get("blend_weight") or {})
    fixed.update(dict(s.split("=", 1) for s in args.blend_weight))
    out = args.out or e.get("dir")
    if not out:
        ap.error("--out is required (or an export.dir in the config)")
    name = args.name or e.get("name", "aki-lstm-gbm")
    model_cfg = torch.load(checkpoint, weights_only=False)["model_config"]
    unknown = set(fixed) - set(model_cfg["outputs"])
    if unknown:
        ap.error(f"--blend-weight: unknown outputs {sorted(unknown)}")
    weights = [float(fixed[o]) if o in fixed else None for o in model_cfg["outputs"]]
    run(checkpoint, out, name, args.version or e.get("version", "1.0.0"), weights)


if __name__ == "__main__":
    main()
