"""Torch-side data handling: padded sequence batches and the normalisation statistics."""

from __future__ import annotations

import numpy as np
import torch

from .data import EventTable
from .model import RiskModel


def padded(ev: EventTable, idx: np.ndarray, *cols: np.ndarray):
    """Entities idx -> x (T, B, F) NaN-padded, dt (T, B, 1), valid (T, B), each col (T, B)."""
    a, b = ev.starts[idx], ev.starts[idx + 1]
    T, B = int((b - a).max()), len(idx)
    x = np.full((T, B, ev.x.shape[1]), np.nan, np.float32)
    dt = np.zeros((T, B, 1), np.float32)
    valid = np.zeros((T, B), bool)
    out = [np.zeros((T, B), np.float32) for _ in cols]
    evdt = ev.dt()
    for j, (s, e) in enumerate(zip(a, b, strict=False)):
        n = e - s
        x[:n, j], dt[:n, j, 0], valid[:n, j] = ev.x[s:e], evdt[s:e], True
        for o, c in zip(out, cols, strict=False):
            o[:n, j] = c[s:e]
    return (
        torch.from_numpy(x),
        torch.from_numpy(dt),
        torch.from_numpy(valid),
        *[torch.from_numpy(o) for o in out],
    )


def length_batches(ev: EventTable, idx: np.ndarray, size: int, rng=None):
    """Entity indices grouped into batches of similar length (shuffled if rng is given)."""
    lengths = ev.starts[idx + 1] - ev.starts[idx]
    order = idx[np.argsort(lengths, kind="stable")]
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


@torch.no_grad()
def derived_features(
    model: RiskModel, ev: EventTable, idx: np.ndarray, batch: int = 512, raw: bool = False
):
    """The model's derived features for entities idx -> (rows, D), rows in table order."""
    rows, feats = [], []
    for b in length_batches(ev, idx, batch):
        x, dt, valid = padded(ev, b)
        d, _ = model.memory.sequence(x, dt, raw=raw)  # (T, B, D)
        feats.append(d.transpose(0, 1)[valid.T].numpy())  # (rows, D), entity-major
        rows.append(ev.rows(b))
    order = np.argsort(np.concatenate(rows), kind="stable")
    return np.concatenate(feats)[order]


@torch.no_grad()
def fit_normalisation(
    model: RiskModel, ev: EventTable, idx: np.ndarray, max_entities: int = 3000, seed: int = 0
):
    """Set x_mean/x_std (observed values) and d_mean/d_std (derived features) from idx."""
    mem = model.memory
    rows = ev.rows(idx)
    x = ev.x[rows].astype(np.float64)
    obs = ~np.isnan(x)
    n = np.maximum(obs.sum(0), 1)
    mean = np.where(obs, x, 0).sum(0) / n
    std = np.sqrt(np.where(obs, (x - mean) ** 2, 0).sum(0) / n)
    mem.x_mean.copy_(torch.tensor(mean, dtype=torch.float32))
    mem.x_std.copy_(torch.tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32))
    sample = np.random.default_rng(seed).permutation(idx)[:max_entities]
    d = derived_features(model, ev, sample, raw=True).astype(np.float64)
    sd = d.std(0)
    mem.d_mean.copy_(torch.tensor(d.mean(0), dtype=torch.float32))
    mem.d_std.copy_(torch.tensor(np.where(sd > 1e-6, sd, 1.0), dtype=torch.float32))
