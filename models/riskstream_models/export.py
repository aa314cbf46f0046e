"""Export one step of a RiskModel to ONNX + manifest.json, per docs/model-contract.md.

python -m riskstream_models.export --tiny tests/fixtures/models/tiny/0.1.0

(A trained checkpoint is exported by `train` itself, or `python -m riskstream_models.checkpoint`.)
"""

from __future__ import annotations

import argparse
import datetime as dt_
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from .data import (
    OUTPUTS,
    PHYSIONET_FEATURES,
    PLAUSIBLE_RANGES,
    SAMPLE,
    EventTable,
    load_events,
)
from .dataset import fit_normalisation, length_batches, padded
from .model import ModelConfig, RiskModel

OPSET = 17
__all__ = ["SAMPLE", "export", "export_onnx", "knots_doc", "knots_from_doc", "manifest", "tiny"]


class Step(nn.Module):
    """Positional wrapper for the ONNX exporter: (x, dt, *states) -> (risk, *next_states)."""

    def __init__(self, model: RiskModel):
        super().__init__()
        self.model = model

    def forward(self, x, dt, *states):
        risk, nxt = self.model.step(x, dt, list(states))
        return (risk, *nxt)


def export_onnx(model: RiskModel, path: Path) -> None:
    model.eval()
    names = model.cfg.state_names()
    B = 2
    x = torch.full((B, len(model.cfg.features)), float("nan"))
    dt = torch.ones(B, 1)
    states = model.zero_states(B)
    dyn = {"x": {0: "batch"}, "dt": {0: "batch"}, "risk": {0: "batch"}}
    dyn.update({n: {1: "batch"} for n in names})
    dyn.update({f"{n}_next": {1: "batch"} for n in names})
    with (
        warnings.catch_warnings()
    ):  # the contract pins the legacy exporter, which warns it is legacy
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            Step(model).eval(),
            (x, dt, *states),
            str(path),
            input_names=["x", "dt", *names],
            output_names=["risk", *[f"{n}_next" for n in names]],
            dynamic_axes=dyn,
            opset_version=OPSET,
            dynamo=False,
        )
    # pin the static output dims the tracer left symbolic (e.g. m_next's M)
    g = onnx.load(str(path))
    K = len(model.cfg.outputs)
    dims = {
        "risk": ["batch", K],
        **{f"{n}_next": [s[0], "batch", s[1]] for n, s in model.cfg.state_shapes().items()},
    }
    for o in g.graph.output:
        for d, v in zip(o.type.tensor_type.shape.dim, dims[o.name], strict=False):
            if isinstance(v, str):
                d.dim_param = v
            else:
                d.dim_value = v
    onnx.checker.check_model(g)
    onnx.save(g, str(path))


def onnx_rollout(
    session: ort.InferenceSession, names: list[str], shapes: dict, x: np.ndarray, dt: np.ndarray
) -> np.ndarray:
    """Step an ONNX model over sequences as the service does.

    x (T, B, F), dt (T, B, 1) -> risk (T, B, K)."""
    B = x.shape[1]
    states = {n: np.zeros((s[0], B, s[1]), np.float32) for n, s in shapes.items()}
    out = []
    for t in range(x.shape[0]):
        res = session.run(None, {"x": x[t], "dt": dt[t], **states})
        out.append(res[0])
        states = dict(zip(names, res[1:], strict=False))
    return np.stack(out)


@torch.no_grad()
def parity(model: RiskModel, onnx_path: Path, ev: EventTable, n_entities: int = 16) -> float:
    """Max |risk_onnx_step_rollout - risk_torch_forward| over the valid hours of n entities."""
    model.eval()
    idx = length_batches(ev, np.arange(len(ev.starts) - 1), n_entities)[-1]  # the longest ones
    x, dt, valid = padded(ev, idx)
    ref = model(x, dt).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = onnx_rollout(
        sess, model.cfg.state_names(), model.cfg.state_shapes(), x.numpy(), dt.numpy()
    )
    return float(np.abs(got - ref)[valid.numpy()].max())


def manifest(
    model: RiskModel, name: str, version: str, onnx_path: Path, training: dict, evaluation: dict
) -> dict:
    cfg = model.cfg
    units = {f[0]: f for f in PHYSIONET_FEATURES}
    feats = [
        {
            "name": f,
            "unit": units.get(f, (f, "", ""))[1],
            "description": units.get(f, (f, "", f))[2],
            **({"range": list(PLAUSIBLE_RANGES[f])} if f in PLAUSIBLE_RANGES else {}),
        }
        for f in cfg.features
    ]
    outs = [o for o in OUTPUTS if o["name"] in cfg.outputs]
    rebuild = {k: v for k, v in cfg.to_dict().items() if k != "features"}
    if cfg.calibration == "isotonic":
        rebuild["calibration_knots"] = knots_doc(cfg.outputs, model.calib_x, model.calib_y)
    return {
        "format": "riskstream-model/1",
        "name": name,
        "version": version,
        "features": feats,
        "outputs": outs,
        **({"ignored_features": list(cfg.ignored_features)} if cfg.ignored_features else {}),
        "states": [{"name": n, "shape": s} for n, s in cfg.state_shapes().items()],
        "cell": {
            "type": cfg.cell,
            "layers": cfg.layers,
            "hidden": cfg.hidden,
            "highway": cfg.highway,
            "memory": cfg.memory_size,
            "key_labs": cfg.key_labs if cfg.memory else [],
            "calibration": cfg.calibration,
            "networks_averaged": getattr(model, "n", 1),
            # what `adapt` needs to rebuild the step from this artifact (weights: model.onnx)
            **({"config": rebuild} if getattr(model, "n", 1) == 1 else {}),
        },
        "onnx": {
            "file": "model.onnx",
            "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "opset": OPSET,
            "exporter": "torch.onnx (legacy, dynamo=False)",
            "torch": torch.__version__.split("+")[0],
        },
        "training_data": training,
        "evaluation": evaluation,
        "created": dt_.datetime.now(dt_.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def knots_doc(outputs: list[str], xk, yk) -> dict:
    """Per output the calibration knots (logit -> risk), without the padding that repeats the
    last knot; float32 values written exactly (`knots_from_doc` pads them back)."""
    out = {}
    for k, name in enumerate(outputs):
        x = np.asarray(xk[k], np.float32)
        y = np.asarray(yk[k], np.float32)
        n = len(x)
        while n > 1 and x[n - 1] == x[n - 2] and y[n - 1] == y[n - 2]:
            n -= 1
        out[name] = {"logit": [float(v) for v in x[:n]], "risk": [float(v) for v in y[:n]]}
    return out


def knots_from_doc(doc: dict, outputs: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, n) knot arrays from `knots_doc`, padded by repeating the last knot."""
    xs, ys = [], []
    for name in outputs:
        x, y = np.asarray(doc[name]["logit"], np.float32), np.asarray(doc[name]["risk"], np.float32)
        xs.append(np.r_[x, np.full(n - len(x), x[-1], np.float32)])
        ys.append(np.r_[y, np.full(n - len(y), y[-1], np.float32)])
    return np.stack(xs), np.stack(ys)


def export(
    model: RiskModel,
    out: str | Path,
    name: str,
    version: str,
    training: dict,
    evaluation: dict,
    check: EventTable,
    tol: float = 1e-5,
) -> dict:
    """Write model.onnx + manifest.json to out after checking step/sequence parity."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    export_onnx(model, path)
    diff = parity(model, path, check)
    if not diff <= tol:
        raise RuntimeError(f"export parity failed: max abs diff {diff:.3g} > {tol}")
    man = manifest(model, name, version, path, training, evaluation)
    man["onnx"]["parity_max_abs_diff"] = diff
    (out / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    print(f"exported {out} (parity max abs diff {diff:.2e}, {path.stat().st_size / 1e6:.2f} MB)")
    return man


def tiny(out: str | Path, data: str = SAMPLE) -> dict:
    """The untrained (seeded) tiny fixture for the service tests."""
    torch.manual_seed(0)
    ev = load_events(data)
    cfg = ModelConfig(
        features=[f[0] for f in PHYSIONET_FEATURES],
        cell="lstm",
        layers=2,
        hidden=8,
        key_labs=["Creatinine"],
        head_hidden=8,
    )
    model = RiskModel(cfg)
    fit_normalisation(model, ev, np.arange(len(ev.starts) - 1))
    training = {
        "name": "untrained (seeded init); normalisation from the PhysioNet 2019 set A sample",
        "fingerprint": ev.fingerprint,
        "rows": len(ev.time),
        "entities": len(ev.starts) - 1,
    }
    return export(model, out, "tiny", "0.1.0", training, {}, ev)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiny", metavar="OUT", required=True, help="write the tiny fixture to OUT")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tiny(args.tiny)


if __name__ == "__main__":
    main()
