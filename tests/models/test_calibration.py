"""Calibration keeps order: the in-graph calibration is strictly increasing, with no plateaus.

A step (isotonic) calibration maps ranges of scores to one value, so the dashboard showed several
patients at exactly the same percentage with a meaningless order between them.
"""

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from riskstream_models.model import calibrate
from riskstream_models.train import isotonic_knots


def _unpadded(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(xs)
    while n > 1 and xs[n - 1] == xs[n - 2]:  # the padding repeats the last knot
        n -= 1
    return xs[:n], ys[:n]


def assert_strict_knots(xs: np.ndarray, ys: np.ndarray) -> None:
    xs, ys = _unpadded(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    assert len(xs) >= 3
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0), "knots with a plateau"
    assert ys[0] > 0.0 and ys[-1] < 1.0
    # the piecewise-linear function itself (without the graph's 1e-3 sigmoid safety net):
    # strictly increasing on a fine grid spanning the knots
    grid = np.linspace(xs[0], xs[-1], 20_001)
    assert np.all(np.diff(np.interp(grid, xs, ys)) > 0)


def test_isotonic_knots_strictly_increasing_on_stepwise_data():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20_000)
    # a risk that is flat over wide ranges of the score: isotonic regression has long plateaus
    y = (rng.random(len(z)) < np.where(z < 0, 0.05, np.where(z < 2, 0.3, 0.6))).astype(float)
    xs, ys = isotonic_knots(z, y, 256)
    assert len(xs) == 256
    assert_strict_knots(xs, ys)
    # in the graph's function (float32, as exported), on a 0.01-logit grid: distinct scores stay
    # distinct (no plateau), equal scores equal
    grid = torch.linspace(-12, 12, 2_401, dtype=torch.float32)[:, None]
    p = calibrate(
        grid,
        "isotonic",
        torch.tensor(xs[None], dtype=torch.float32),
        torch.tensor(ys[None], dtype=torch.float32),
        None,
    )[:, 0].numpy()
    assert np.all(np.diff(p) > 0)
    again = calibrate(
        grid.clone(),
        "isotonic",
        torch.tensor(xs[None], dtype=torch.float32),
        torch.tensor(ys[None], dtype=torch.float32),
        None,
    )[:, 0].numpy()
    assert np.array_equal(p, again)
    # still a calibration: close to the observed rates inside the flat ranges
    for lo, hi, rate in ((-4, -1, 0.05), (0.5, 1.5, 0.3), (3, 5, 0.6)):
        mid = (grid[:, 0] > lo) & (grid[:, 0] < hi)
        assert abs(float(np.median(p[mid.numpy()])) - rate) < 0.08
