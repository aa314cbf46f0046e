"""Several trained networks (e.g. seeds) averaged in one step, sharing one feature memory
(the opt-in artifact aki-lstm 1.1.0). The averaging run itself is research:

    python models/experiments/average.py runs/aki-lstm/model.pt runs/seed-1/model.pt \
        runs/seed-2/model.pt --out runs/avg3

The networks must have been trained on the same split with the same memory config (their
normalisation statistics are then identical). States are the networks' states concatenated
along H: `h`, `c` [L, B, N*H]; the memory `m` is shared. The averaged logit is calibrated again
(isotonic, calib split). That run saves a checkpoint that `checkpoint.load_checkpoint` reads.
"""

from __future__ import annotations

import copy

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
