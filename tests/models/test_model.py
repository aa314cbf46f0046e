"""Feature memory exactness, step/sequence parity, ONNX export parity, no look-ahead in outputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from riskstream_models.data import FEATURES  # noqa: E402
from riskstream_models.export import export_onnx, onnx_rollout  # noqa: E402
from riskstream_models.model import ModelConfig, RiskModel  # noqa: E402

CI = FEATURES.index("Creatinine")


def random_sequence(T=120, B=3, seed=0, hourly=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 0.5, (T, B, len(FEATURES))).astype(np.float32)
    x[rng.random(x.shape) < 0.7] = np.nan
    dt = np.ones((T, B, 1)) if hourly else rng.choice([0.0, 0.3, 0.5, 1.0, 2.5, 7.0], (T, B, 1))
    dt[0] = 0
    return torch.tensor(x), torch.tensor(dt, dtype=torch.float32)


def model(cell="lstm", memory=True, seed=0, **extra):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        features=FEATURES,
        cell=cell,
        layers=2,
        hidden=8,
        head_hidden=8,
        memory=memory,
        key_labs=["Creatinine", "BUN"],
        ring_hours=168,
        **extra,
    )
    return RiskModel(cfg).eval()


def stepped(m, x, dt):
    """The model stepped one hour at a time over the whole sequence: (T, B, K)."""
    with torch.no_grad():
        states, out = m.zero_states(x.shape[1]), []
        for t in range(x.shape[0]):
            r, states = m.step(x[t], dt[t], states)
            out.append(r)
    return torch.stack(out)


EMA = {"ema_hours": [6.0, 24.0, 72.0], "key_windows": [6, 24, 72], "aux": ["aki24", "creat48"]}


def test_ring_buffer_extrema_exact_for_any_dt():
    m = model()
    x, dt = random_sequence()
    clock = torch.cumsum(dt, 0)[:, :, 0].numpy().astype(np.float64)  # (T, B)
    state = torch.zeros(x.shape[1], m.cfg.memory_size)
    for t in range(x.shape[0]):
        state = m.memory.update(x[t], dt[t], state)
        _, _, _, _, _, _, first, bmin, bmax, bobs = m.memory.unpack(state)
        for W in (48, 168):
            lo, hi, has = m.memory.window(bmin, bmax, bobs, W)
            for b in range(x.shape[1]):
                c = x[: t + 1, b, CI].numpy()
                hours = np.floor(clock[: t + 1, b])
                sel = ~np.isnan(c) & (hours >= np.floor(clock[t, b]) - W)
                assert bool(has[b, 0]) == sel.any()
                if sel.any():
                    assert lo[b, 0] == c[sel].min() and hi[b, 0] == c[sel].max()
        for b in range(x.shape[1]):
            seen = x[: t + 1, b, CI].numpy()
            seen = seen[~np.isnan(seen)]
            assert first[b, 0] == (seen[0] if len(seen) else 0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "sru"])
@pytest.mark.parametrize("memory", [True, False])
def test_step_equals_forward(cell, memory):
    m = model(cell, memory)
    x, dt = random_sequence(T=40)
    with torch.no_grad():
        ref = m(x, dt)
    assert stepped(m, x, dt).sub(ref).abs().max() <= 1e-5


def test_no_look_ahead():
    m = model()
    x, dt = random_sequence(T=60, hourly=True)
    x2 = x.clone()
    x2[30:] = torch.randn_like(x2[30:]) * 5
    with torch.no_grad():
        a, b = m(x, dt), m(x2, dt)
    assert torch.equal(a[:30], b[:30])
    assert not torch.equal(a[30:], b[30:])


@pytest.mark.parametrize("cell", ["lstm", "sru"])
def test_onnx_export_parity(tmp_path, cell):
    import onnxruntime as ort

    m = model(cell)
    export_onnx(m, tmp_path / "model.onnx")
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x, dt = random_sequence(T=50, B=4)
    got = onnx_rollout(sess, m.cfg.state_names(), m.cfg.state_shapes(), x.numpy(), dt.numpy())
    with torch.no_grad():
        ref = m(x, dt).numpy()
    assert np.abs(got - ref).max() <= 1e-5


def test_average_of_networks_export_parity(tmp_path):
    import onnxruntime as ort
    from riskstream_models.average import AverageModel

    avg = AverageModel([model(seed=0), model(seed=1)]).eval()
    assert avg.cfg.state_shapes()["h"] == [2, 16]
    export_onnx(avg, tmp_path / "model.onnx")
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x, dt = random_sequence(T=30, B=3)
    got = onnx_rollout(sess, avg.cfg.state_names(), avg.cfg.state_shapes(), x.numpy(), dt.numpy())
    with torch.no_grad():
        ref = avg(x, dt).numpy()
        mean = torch.stack([n(x, dt) for n in avg.nets]).logit().mean(0).sigmoid().numpy()
    assert np.abs(got - ref).max() <= 1e-5
    assert np.abs(ref - mean).max() <= 1e-5  # uncalibrated: sigmoid of the mean logit


def test_ema_statistics_exact_for_any_dt():
    """The decayed weight, mean, mean age, and the weighted trend moments against brute force."""
    m = model(**EMA)
    x, dt = random_sequence(T=80, B=3)
    clock = torch.cumsum(dt, 0)[:, :, 0].double().numpy()
    with torch.no_grad():
        _, state = m.memory.sequence(x, dt)
    assert state.shape[1] == m.cfg.memory_size
    mean0, std0 = m.memory.x_mean.double().numpy(), m.memory.x_std.double().numpy()
    for i, hl in enumerate(m.cfg.ema_hours):
        got = [t.double().numpy() for t in m.memory.unpack_ema(state)[i]]
        for b in range(x.shape[1]):
            for v in (0, CI, 7):
                xs = x[:, b, v].double().numpy()
                o = ~np.isnan(xs)
                if not o.any():
                    assert got[0][b, v] == 0
                    continue
                xn = (xs[o] - mean0[v]) / std0[v]
                age = clock[-1, b] - clock[o, b]
                w = 0.5 ** (age / hl)
                mu, am = (w * xn).sum() / w.sum(), (w * age).sum() / w.sum()
                want = [
                    w.sum(),
                    mu,
                    am,
                    (w * (age - am) ** 2).sum(),
                    (w * (age - am) * (xn - mu)).sum(),
                ]
                np.testing.assert_allclose([g[b, v] for g in got], want, rtol=1e-4, atol=1e-4)


def test_ema_memory_step_forward_and_onnx_parity(tmp_path):
    import onnxruntime as ort

    m = model(**EMA)
    D = m.cfg.derived_size
    x, dt = random_sequence(T=50, B=4)
    with torch.no_grad():
        d, _ = m.memory.sequence(x, dt)
        assert d.shape[-1] == D and torch.isfinite(d).all()
        ref = m(x, dt)
    assert stepped(m, x, dt).sub(ref).abs().max() <= 1e-5
    export_onnx(m, tmp_path / "model.onnx")
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = onnx_rollout(sess, m.cfg.state_names(), m.cfg.state_shapes(), x.numpy(), dt.numpy())
    assert np.abs(got - ref.numpy()).max() <= 1e-5
