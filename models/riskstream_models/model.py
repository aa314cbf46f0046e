"""The riskstream recurrent risk model, in one file.

One step of the model, for a batch of B entities, is

    x [B, F] raw values (NaN = not measured), dt [B, 1] hours since the previous event
      -> feature memory m [B, M] updated (last values, hours since, counts, ring buffer of hours)
      -> derived features d [B, D] (normalised values, masks, dt, lab extrema, KDIGO ratios)
      -> embedding ReLU(W d) [B, H]
      -> L stacked recurrent layers (lstm | gru | sru) with highway gates between them
      -> one head per output, reading the top layer (and d), -> logit -> calibration -> probability

`step` runs one event; `forward` runs whole sequences [T, B, ...]. They are the same computation
(the memory update is literally the same code; the recurrent layers use torch's fused LSTM/GRU in
`forward` and the equivalent cell equations in `step`), which the export parity check verifies.

Feature memory layout (per entity, flat, M floats), with K key labs and R = ring_hours + 1 slots:
    clock [1]       hours since the entity's first event
    last  [F]       last observed raw value of every variable (0 if never)
    seen  [F]       1 once the variable was observed
    since [F]       hours since it was last observed
    count [F]       number of observations
    prev  [K]       key lab: the observed value before `last`
    first [K]       key lab: first observed value (first creatinine)
    bmin, bmax, bobs [K, R]  ring buffer of hours: slot j = the hour j hours before the current one
                    (min and max of the values observed in that hour, and whether any was)
The ring buffer shifts by the number of hour boundaries crossed (floor(clock + dt) - floor(clock)),
so windowed extrema are exact for any dt, not only hourly rows.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

BIG = 1e9  # stands in for +-inf in masked min/max


@dataclass
class ModelConfig:
    features: list[str]
    outputs: list[str] = field(default_factory=lambda: ["aki_48h", "sepsis"])
    cell: str = "lstm"  # lstm | gru | sru
    layers: int = 2
    hidden: int = 128
    highway: bool = True
    dropout: float = 0.1
    input_dropout: float = 0.0  # dropout on the derived features (training only)
    aux: list[str] = field(default_factory=list)  # auxiliary training targets (not exported)
    memory: bool = True  # carry the feature memory state m
    key_labs: list[str] = field(
        default_factory=lambda: ["Creatinine", "BUN", "Potassium", "Phosphate", "Platelets", "PTT"]
    )
    ring_hours: int = 168  # longest window; windows are 48 h and 168 h
    heads_read_memory: bool = True  # heads see the derived features as well as the top layer
    head_hidden: int = 64
    # exponentially weighted statistics of every variable, one set per half-life (hours)
    ema_hours: list[float] = field(default_factory=list)
    key_windows: list[int] = field(default_factory=list)  # extra key-lab windows (hours)
    calibration: str = "none"  # none | isotonic | platt (set when fitted)
    # inputs the model ignores (e.g. seen in under 1% of training hours): read as never measured,
    # in training and inside the exported step, so a site that measures them changes nothing
    ignored_features: list[str] = field(default_factory=list)
    calib_knots: int = 256

    @property
    def n_key(self) -> int:
        return len(self.key_labs) if self.memory else 0

    @property
    def ring(self) -> int:
        return self.ring_hours + 1

    @property
    def memory_size(self) -> int:
        f, k = len(self.features), self.n_key
        if not self.memory:
            return 0
        return 1 + 4 * f + 2 * k + 3 * k * self.ring + 5 * f * len(self.ema_hours)

    @property
    def derived_size(self) -> int:
        f, k = len(self.features), self.n_key
        if not self.memory:
            return 2 * f + 1
        n = len(self.ema_hours)
        return (
            6 * f
            + 2
            + 11 * k
            + (5 if "Creatinine" in self.key_labs else 0)
            + f * (4 * n + max(n - 1, 0))
            + 3 * k * len(self.key_windows)
        )

    def state_names(self) -> list[str]:
        rec = {"lstm": ["h", "c"], "gru": ["h"], "sru": ["c"]}[self.cell]
        return rec + (["m"] if self.memory else [])

    def state_shapes(self) -> dict[str, list[int]]:
        shapes = {s: [self.layers, self.hidden] for s in self.state_names() if s != "m"}
        if self.memory:
            shapes["m"] = [1, self.memory_size]
        return shapes

    def to_dict(self) -> dict:
        return asdict(self)


class FeatureMemory(nn.Module):
    """The running feature memory and the derived features computed from it (no parameters)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        F_, K, R = len(cfg.features), cfg.n_key, cfg.ring
        self.register_buffer("x_mean", torch.zeros(F_))  # over observed values, training split
        self.register_buffer("x_std", torch.ones(F_))
        self.register_buffer("d_mean", torch.zeros(cfg.derived_size))  # over training rows
        self.register_buffer("d_std", torch.ones(cfg.derived_size))
        self.register_buffer(
            "key_idx",
            torch.tensor([cfg.features.index(k) for k in cfg.key_labs[:K]], dtype=torch.long),
        )
        self.register_buffer("slot", torch.arange(R, dtype=torch.float32))  # (R,)
        unknown = set(cfg.ignored_features) - set(cfg.features)
        assert not unknown, f"ignored_features not among the features: {sorted(unknown)}"
        self.register_buffer(
            "ignored",
            torch.tensor([f in cfg.ignored_features for f in cfg.features], dtype=torch.bool),
            persistent=False,  # follows from the config
        )
        self.creat = (
            cfg.key_labs.index("Creatinine") if cfg.memory and "Creatinine" in cfg.key_labs else -1
        )
        self.sizes = [1, F_, F_, F_, F_, K, K, K * R, K * R, K * R]
        self.sizes += [F_] * (5 * len(cfg.ema_hours))  # per half-life: w, mean, age, m2, co
        self.register_buffer(
            "half_life",
            torch.tensor([float(h) for h in cfg.ema_hours], dtype=torch.float32),
            persistent=False,  # follows from the config; checkpoints of 1.0.0 load unchanged
        )

    def unpack(self, m):
        """m (B, M) -> clock, last, seen, since, count, prev, first, bmin, bmax, bobs."""
        parts = list(torch.split(m, self.sizes, dim=1))[:10]
        K, R = self.cfg.n_key, self.cfg.ring
        parts[7:] = [p.reshape(-1, K, R) for p in parts[7:]]  # (B, K, R)
        return parts

    def unpack_ema(self, m):
        """m (B, M) -> per half-life (w, mean, age, m2, co), each (B, F)."""
        parts = list(torch.split(m, self.sizes, dim=1))[10:]
        return [parts[5 * i : 5 * i + 5] for i in range(len(self.cfg.ema_hours))]

    def update_ema(self, xn, obs, dt, ema):
        """Exponentially weighted mean and weighted linear trend of every variable against time.

        Weights halve every `half_life` hours of elapsed time (dt, not rows). Kept in centred
        form (weighted Welford): w = sum of weights, mean = weighted mean of the normalised
        values, age = weighted mean age of the observations (hours), m2 = sum w (age - age)^2,
        co = sum w (age - age)(value - mean). Elapsing dt adds dt to every age (m2, co unchanged)
        and multiplies every weight by a = 2^(-dt / half_life); a new observation has age 0."""
        out = []
        for i, (w, mean, age, m2, co) in enumerate(ema):
            a = torch.exp(dt * (-0.6931471805599453 / self.half_life[i]))  # (B, 1)
            w, m2, co, age = w * a, m2 * a, co * a, (age + dt) * (w > 0).to(w.dtype)
            w2 = w + obs
            f = obs / w2.clamp(min=1e-6)  # weight share of the new observation
            da, dx = -age, xn - mean  # new age 0 against the old mean age; value against mean
            mean = mean + f * dx
            age = age + f * da
            m2 = m2 + obs * w * f * da * da  # = obs * da * (0 - new age)
            co = co + obs * w * f * da * dx
            out += [w2, mean, age, m2, co]
        return out

    def ignore(self, x):
        """x (B, F) with the ignored inputs set to NaN (not measured); x itself without any."""
        if not self.cfg.ignored_features:
            return x
        return torch.where(self.ignored, torch.full_like(x, float("nan")), x)

    def update(self, x, dt, m):
        """x (B, F) raw with NaN, dt (B, 1), m (B, M) -> new m (B, M)."""
        x = self.ignore(x)
        clock, last, seen, since, count, prev, first, bmin, bmax, bobs = self.unpack(m)
        obs = (~torch.isnan(x)).to(x.dtype)  # (B, F)
        x0 = torch.where(obs > 0, x, torch.zeros_like(x))
        # advance time: shift the ring buffer by the hour boundaries crossed
        new_clock = clock + dt  # (B, 1)
        shift = (torch.floor(new_clock) - torch.floor(clock)).clamp(0, self.cfg.ring)  # (B, 1)
        src = self.slot[None, :] - shift  # (B, R): slot j now holds old slot j - shift
        keep = (src >= 0).to(x.dtype)[:, None, :]  # (B, 1, R)
        gidx = src.clamp(min=0).long()[:, None, :].expand_as(bmin)  # (B, K, R)
        bmin, bmax, bobs = (torch.gather(b, 2, gidx) * keep for b in (bmin, bmax, bobs))
        since = (since + dt) * seen
        # key labs: previous and first values, then the current hour's slot 0
        kx, kobs, kseen, klast = (t[:, self.key_idx] for t in (x0, obs, seen, last))  # (B, K)
        prev = torch.where(kobs * kseen > 0, klast, prev)
        first = torch.where(kobs * (1 - kseen) > 0, kx, first)
        had = bobs[:, :, 0] > 0  # (B, K)
        lo = torch.where(had, torch.minimum(bmin[:, :, 0], kx), kx)
        hi = torch.where(had, torch.maximum(bmax[:, :, 0], kx), kx)
        now = kobs > 0
        bmin = torch.cat([torch.where(now, lo, bmin[:, :, 0])[:, :, None], bmin[:, :, 1:]], 2)
        bmax = torch.cat([torch.where(now, hi, bmax[:, :, 0])[:, :, None], bmax[:, :, 1:]], 2)
        bobs = torch.cat([torch.maximum(bobs[:, :, 0], kobs)[:, :, None], bobs[:, :, 1:]], 2)
        # every variable: last value, seen, hours since, count
        last = torch.where(obs > 0, x0, last)
        since = since * (1 - obs)
        seen = torch.maximum(seen, obs)
        count = count + obs
        flat = [b.flatten(1) for b in (bmin, bmax, bobs)]
        if self.cfg.ema_hours:
            xn = torch.where(obs > 0, (x - self.x_mean) / self.x_std, torch.zeros_like(x))
            flat += self.update_ema(xn, obs, dt, self.unpack_ema(m))
        return torch.cat([new_clock, last, seen, since, count, prev, first, *flat], dim=1)

    def window(self, bmin, bmax, bobs, hours: int):
        """Exact min/max over the current hour and the `hours` before it. -> lo, hi, has (B, K)."""
        o = bobs[:, :, : hours + 1] > 0
        lo = torch.where(
            o, bmin[:, :, : hours + 1], torch.full_like(bmin[:, :, : hours + 1], BIG)
        ).amin(2)
        hi = torch.where(
            o, bmax[:, :, : hours + 1], torch.full_like(bmax[:, :, : hours + 1], -BIG)
        ).amax(2)
        has = o.any(2)
        z = torch.zeros_like(lo)
        return torch.where(has, lo, z), torch.where(has, hi, z), has.to(lo.dtype)

    def derived(self, x, dt, m):
        """After the update: x (B, F), dt (B, 1), new m (B, M) -> standardised d (B, D)."""
        return ((self.derived_raw(x, dt, m) - self.d_mean) / self.d_std).clamp(-10, 10)

    def derived_raw(self, x, dt, m):
        """The derived features before standardisation (B, D)."""
        x = self.ignore(x)
        obs = (~torch.isnan(x)).to(x.dtype)
        xv = torch.where(obs > 0, (x - self.x_mean) / self.x_std, torch.zeros_like(x))  # (B, F)
        parts = [xv, obs, torch.log1p(dt.clamp(min=0))]
        if self.cfg.memory:
            clock, last, seen, since, count, prev, first, bmin, bmax, bobs = self.unpack(m)
            parts += [
                seen * (last - self.x_mean) / self.x_std,
                seen,
                torch.log1p(since),
                torch.log1p(count),
                torch.log1p(clock),
            ]
            km, ks = self.x_mean[self.key_idx], self.x_std[self.key_idx]  # (K,)
            klast, kseen, kcount = (
                last[:, self.key_idx],
                seen[:, self.key_idx],
                count[:, self.key_idx],
            )
            lo48, hi48, has48 = self.window(bmin, bmax, bobs, 48)
            lo168, hi168, has168 = self.window(bmin, bmax, bobs, self.cfg.ring_hours)
            parts += [has48 * (v - km) / ks for v in (lo48, hi48)]
            parts += [has168 * (v - km) / ks for v in (lo168, hi168)]
            parts += [
                has48,
                has168,
                has48 * (klast - lo48) / ks,
                has168 * (klast - lo168) / ks,
                (hi48 - lo48) / ks,
                (kcount > 1).to(x.dtype) * (klast - prev) / ks,
                kseen * (klast - first) / ks,
            ]
            if self.creat >= 0:  # creatinine against its baselines, KDIGO-style
                c, c48, c168, c0 = (
                    v[:, self.creat : self.creat + 1] for v in (klast, lo48, lo168, first)
                )
                h48, h168 = (
                    has48[:, self.creat : self.creat + 1],
                    has168[:, self.creat : self.creat + 1],
                )
                ratio = lambda a, b, h: h * (a / b.clamp(min=0.1) - 1)  # noqa: E731
                parts += [
                    ratio(c, c48, h48),
                    ratio(c, c168, h168),
                    ratio(c, c0, h168),
                    h48 * (c - c48 >= 0.3).to(x.dtype),
                    h168 * (c >= 1.5 * c168).to(x.dtype),
                ]
            for hours in self.cfg.key_windows:
                lo, hi, has = self.window(bmin, bmax, bobs, hours)
                parts += [has * (lo - km) / ks, has * (hi - km) / ks, has]
            lastn = seen * (last - self.x_mean) / self.x_std
            means = []
            for w, mean, _age, m2, co in self.unpack_ema(m):
                has = (w > 0).to(x.dtype)
                # weighted slope per hour against time, shrunk by 1 h^2 per unit weight
                trend = -co / (m2 + w).clamp(min=1e-6)
                parts += [has * mean, torch.log1p(w), lastn - has * mean, has * trend]
                means.append(has * mean)
            parts += [a - b for a, b in itertools.pairwise(means)]
        return torch.cat(parts, dim=1)  # (B, D)

    def sequence(self, x, dt, raw: bool = False):
        """x (T, B, F), dt (T, B, 1) -> derived features d (T, B, D), final memory (B, M)."""
        m = x.new_zeros(x.shape[1], self.cfg.memory_size)
        out = []
        for t in range(x.shape[0]):
            if self.cfg.memory:
                m = self.update(x[t], dt[t], m)
            out.append((self.derived_raw if raw else self.derived)(x[t], dt[t], m))
        return torch.stack(out), m


class SRU(nn.Module):
    """Simple Recurrent Unit (Lei et al. 2018), single layer, input size = hidden size."""

    def __init__(self, hidden: int):
        super().__init__()
        self.w = nn.Linear(hidden, 3 * hidden)
        self.v = nn.Parameter(torch.zeros(2, hidden))

    def cell(self, u, c):  # u (B, 3H) = W x, precomputed; x (B, H) via highway below
        z, f, r = u.chunk(3, dim=1)
        f = torch.sigmoid(f + self.v[0] * c)
        r = torch.sigmoid(r + self.v[1] * c)
        c = f * c + (1 - f) * z
        return r, c

    def step(self, x, c):  # x (B, H), c (B, H)
        r, c = self.cell(self.w(x), c)
        return r * torch.tanh(c) + (1 - r) * x, c

    def forward(self, x, c):  # x (T, B, H), c (B, H)
        u, out = self.w(x), []
        for t in range(x.shape[0]):
            r, c = self.cell(u[t], c)
            out.append(r * torch.tanh(c) + (1 - r) * x[t])
        return torch.stack(out), c


def calibrate(z, kind: str, xk, yk, platt):
    """Logits z (..., K) -> probabilities (..., K), per output k.

    isotonic: piecewise-linear interpolation through knots (xk[k], yk[k]) (K, N), constant outside;
    mixed 1000:1 with the sigmoid so it is strictly increasing (ranking, AUROC, AUPRC kept).
    platt: sigmoid(a z + b) with platt (K, 2). none: sigmoid(z).
    """
    if kind == "platt":
        return torch.sigmoid(platt[:, 0] * z + platt[:, 1])
    if kind != "isotonic":
        return torch.sigmoid(z)
    width = xk[:, 1:] - xk[:, :-1]  # (K, N-1)
    rise = yk[:, 1:] - yk[:, :-1]
    slope = torch.where(width > 0, rise / width.clamp(min=1e-12), torch.zeros_like(width))
    seg = torch.minimum(F.relu(z[..., None] - xk[:, :-1]), width)  # (..., K, N-1)
    iso = yk[:, 0] + (seg * slope).sum(-1)
    return (1 - 1e-3) * iso + 1e-3 * torch.sigmoid(z)


def lstm_step(rnn: nn.LSTM, x, h, c):
    """The nn.LSTM equations for one step. x (B, H), h, c (B, H)."""
    g = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0) + F.linear(
        h, rnn.weight_hh_l0, rnn.bias_hh_l0
    )
    i, f, gg, o = g.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(rnn: nn.GRU, x, h):
    """The nn.GRU equations for one step. x (B, H), h (B, H)."""
    gi = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0).chunk(3, dim=1)
    gh = F.linear(h, rnn.weight_hh_l0, rnn.bias_hh_l0).chunk(3, dim=1)
    r, z = torch.sigmoid(gi[0] + gh[0]), torch.sigmoid(gi[1] + gh[1])
    n = torch.tanh(gi[2] + r * gh[2])
    return (1 - z) * n + z * h


class RiskModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        H, D, K = cfg.hidden, cfg.derived_size, len(cfg.outputs)
        self.memory = FeatureMemory(cfg)
        self.embed = nn.Linear(D, H)
        make = {"lstm": lambda: nn.LSTM(H, H), "gru": lambda: nn.GRU(H, H), "sru": lambda: SRU(H)}[
            cfg.cell
        ]
        self.rnn = nn.ModuleList([make() for _ in range(cfg.layers)])
        self.gate = (
            nn.ModuleList([nn.Linear(H, H) for _ in range(cfg.layers)]) if cfg.highway else None
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.drop_in = nn.Dropout(cfg.input_dropout)
        head_in = H + (D if cfg.heads_read_memory else 0)
        self.heads = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(head_in, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 1)
                )
                for _ in range(K)
            ]
        )
        self.aux_head = (
            nn.Sequential(
                nn.Linear(head_in, cfg.head_hidden),
                nn.ReLU(),
                nn.Linear(cfg.head_hidden, len(cfg.aux)),
            )
            if cfg.aux
            else None
        )
        # calibration, per output: isotonic = piecewise-linear knots on the logit; platt = a*z + b
        self.register_buffer("calib_x", torch.zeros(K, cfg.calib_knots))
        self.register_buffer("calib_y", torch.zeros(K, cfg.calib_knots))
        self.register_buffer("platt", torch.tensor([[1.0, 0.0]] * K))  # (K, 2)

    # ---- states -------------------------------------------------------------------------------
    def zero_states(self, batch: int) -> list[torch.Tensor]:
        return [
            torch.zeros(shape[0], batch, shape[1]) for shape in self.cfg.state_shapes().values()
        ]

    def _split_states(self, states):  # list in state_names order -> (recurrent per layer, m)
        names = self.cfg.state_names()
        s = dict(zip(names, states, strict=False))
        return s, s.get("m")

    # ---- the network after the feature memory ----------------------------------------------------
    def _layer_step(self, i, u, s):
        """One layer, one step. u (B, H); s: dict of (L, B, H) -> output (B, H), layer i states."""
        rnn = self.rnn[i]
        if self.cfg.cell == "lstm":
            h, c = lstm_step(rnn, u, s["h"][i], s["c"][i])
            return h, {"h": h, "c": c}
        if self.cfg.cell == "gru":
            h = gru_step(rnn, u, s["h"][i])
            return h, {"h": h}
        o, c = rnn.step(u, s["c"][i])
        return o, {"c": c}

    def _layer_seq(self, i, u, s):
        """One layer over a sequence. u (T, B, H) -> output (T, B, H), final states of layer i."""
        rnn = self.rnn[i]
        if self.cfg.cell == "lstm":
            o, (h, c) = rnn(u, (s["h"][i : i + 1], s["c"][i : i + 1]))
            return o, {"h": h[0], "c": c[0]}
        if self.cfg.cell == "gru":
            o, h = rnn(u, s["h"][i : i + 1])
            return o, {"h": h[0]}
        o, c = rnn(u, s["c"][i])
        return o, {"c": c}

    def network(self, d, states, seq: bool):
        """d (T, B, D) if seq else (B, D); recurrent states -> logits (..., K), new states."""
        top, states = self.trunk(d, states, seq)
        return self.logits(top), states

    def trunk(self, d, states, seq: bool):
        """The recurrent layers -> what the heads read (..., H [+ D]), new states (L, B, H)."""
        s, _ = self._split_states(states)
        d = self.drop_in(d)
        u = self.drop(F.relu(self.embed(d)))  # (T, B, H)
        new = {k: [] for k in s if k != "m"}
        for i in range(self.cfg.layers):
            o, st = (self._layer_seq if seq else self._layer_step)(i, u, s)
            for k, v in st.items():
                new[k].append(v)
            if self.cfg.highway:
                g = torch.sigmoid(self.gate[i](u))
                o = g * o + (1 - g) * u
            u = self.drop(o)
        top = torch.cat([u, d], dim=-1) if self.cfg.heads_read_memory else u
        return top, [torch.stack(new[k]) for k in new]  # each (L, B, H)

    def logits(self, top):
        return torch.cat([head(top) for head in self.heads], dim=-1)  # (..., K)

    def calibrate(self, z):
        """Logits (..., K) -> calibrated probabilities (..., K)."""
        return calibrate(z, self.cfg.calibration, self.calib_x, self.calib_y, self.platt)

    # ---- the two entry points ------------------------------------------------------------------
    def step(self, x, dt, states):
        """One event. x (B, F), dt (B, 1), states list of (L, B, H) -> risk (B, K), next states."""
        logits, _, nxt = self.step_logits(x, dt, states)
        return self.calibrate(logits), nxt

    def step_logits(self, x, dt, states):
        """One event, uncalibrated -> logits (B, K), derived features d (B, D), next states."""
        s, m = self._split_states(states)
        rec = [v for k, v in s.items() if k != "m"]
        new_m = []
        if self.cfg.memory:
            m = self.memory.update(x, dt, m[0])  # (B, M)
            new_m = [m[None]]  # (1, B, M)
        d = self.memory.derived(x, dt, m)  # (B, D)
        logits, rec = self.network(d, rec, seq=False)
        return logits, d, rec + new_m

    def forward(self, x, dt):
        """Whole sequences from a fresh start. x (T, B, F), dt (T, B, 1) -> risk (T, B, K)."""
        d, _ = self.memory.sequence(x, dt)
        rec = self.zero_states(x.shape[1])[: len(self.cfg.state_names()) - int(self.cfg.memory)]
        logits, _ = self.network(d, rec, seq=True)
        return self.calibrate(logits)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
