"""Several trained networks (e.g. seeds) averaged in one step, sharing one feature memory.

    python -m riskstream_models.average runs/aki-lstm/model.pt runs/seed-1/model.pt \
        runs/seed-2/model.pt --out runs/avg3 [--export models/aki-lstm-avg/1.0.0]

The networks must have been trained on the same split with the same memory config (their
normalisation statistics are then identical). States are the networks' states concatenated
along H: `h`, `c` [L, B, N*H]; the memory `m` is shared. The averaged logit is calibrated again
(isotonic, calib split). Saves a checkpoint usable by export.py/ensemble.py via load_checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from .model import RiskModel, calibrate


class AverageModel(nn.Module):
    def __init__(self, models: list[RiskModel]):
        super().__init__()
        base = models[0].cfg
        for m in models[1:]:
            for a, b in zip(m.memory.buffers(), models[0].memory.buffers(), strict=True):
                assert torch.equal(a, b), "networks with different normalisation statistics"
        self.nets = nn.ModuleList(models)
        self.n = len(models)
        self.cfg = copy.deepcopy(base)
        self.cfg.hidden = base.hidden * self.n  # states concatenated along H
        K = len(base.outputs)
        self.register_buffer("calib_x", torch.zeros(K, base.calib_knots))
        self.register_buffer("calib_y", torch.zeros(K, base.calib_knots))
        self.register_buffer("platt", torch.tensor([[1.0, 0.0]] * K))
        self.cfg.calibration = "none"

    @property
    def memory(self):
        return self.nets[0].memory

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(s[0], batch, s[1]) for s in self.cfg.state_shapes().values()]

    def network(self, d, states, seq: bool):
        """d -> mean of the networks' logits; states (L, B, N*H) split per network."""
        parts = [s.chunk(self.n, dim=-1) for s in states]
        logits, new = [], []
        for i, net in enumerate(self.nets):
            z, st = net.network(d, [p[i] for p in parts], seq)
            logits.append(z)
            new.append(st)
        return torch.stack(logits).mean(0), [torch.cat(s, dim=-1) for s in zip(*new, strict=True)]

    def calibrate(self, z):
        return calibrate(z, self.cfg.calibration, self.calib_x, self.calib_y, self.platt)

    def step_logits(self, x, dt, states):
        rec, m = states[:-1], states[-1]
        m = self.memory.update(x, dt, m[0])  # (B, M)
        d = self.memory.derived(x, dt, m)  # (B, D)
        z, rec = self.network(d, rec, seq=False)
        return z, d, [*rec, m[None]]

    def step(self, x, dt, states):
        z, _, nxt = self.step_logits(x, dt, states)
        return self.calibrate(z), nxt

    def forward(self, x, dt):
        d, _ = self.memory.sequence(x, dt)
        z, _ = self.network(d, self.zero_states(x.shape[1])[:-1], seq=True)
        return self.calibrate(z)


def main(argv=None) -> None:
    from .train import Prepared, load_checkpoint, quick_metrics
    from .train import calibrate as fit_calibration

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    loaded = [load_checkpoint(p) for p in args.checkpoints]
    model = AverageModel([m for m, _ in loaded]).eval()
    assert model.cfg.memory, "averaging expects models with the feature memory"
    ck = loaded[0][1]
    prep = Prepared(ck["cfg"], model.nets[0])
    fit_calibration(model, prep, model.cfg.calib_knots)
    model.cfg.calibration = "isotonic"
    result = {
        "checkpoints": args.checkpoints,
        "val": quick_metrics(model, prep, "val"),
        "test": quick_metrics(model, prep, "test"),
    }
    print(json.dumps(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "average": args.checkpoints,
            "cfg": ck["cfg"],
            "training_data": ck["training_data"],
            "state_dict": model.state_dict(),
        },
        out / "model.pt",
    )
    (out / "result.json").write_text(json.dumps(result, indent=2, default=float) + "\n")


def load_average(ck: dict) -> AverageModel:
    from .train import load_checkpoint

    model = AverageModel([load_checkpoint(p)[0] for p in ck["average"]])
    model.load_state_dict(ck["state_dict"])
    model.cfg.calibration = "isotonic"
    return model.eval()


if __name__ == "__main__":
    main()
