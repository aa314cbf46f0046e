"""The training pipeline end to end on the small sample: train, calibrate, export, evaluate."""

import json

import pytest

pytest.importorskip("torch")

import torch
from riskstream_models.export import SAMPLE
from riskstream_models.model import ModelConfig, RiskModel
from riskstream_models.train import load_config, run


def test_train_export_evaluate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/cache lands here
    cfg = load_config(
        None,
        [
            f"data.path={SAMPLE}",
            'model={"hidden": 8, "head_hidden": 8, "key_labs": ["Creatinine"]}',
            "train.epochs=2",
            "out=run",
            'export={"dir": "art", "name": "smoke", "version": "0.0.1"}',
        ],
    )
    res = run(cfg)
    man = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert man["cell"]["calibration"] == "isotonic"
    assert man["onnx"]["parity_max_abs_diff"] <= 1e-5
    assert man["training_data"]["split"]["seed"] == 0
    # the ONNX evaluation ranks like the torch model (strictly increasing calibration)
    assert abs(man["evaluation"]["aki_48h"]["auroc"] - res["test"]["aki_auroc"]) < 1e-4
    assert (tmp_path / "run" / "model.pt").exists() and (tmp_path / "run" / "config.json").exists()
    assert_exported_calibration_keeps_order(tmp_path / "run" / "model.pt", tmp_path / "art")


def assert_exported_calibration_keeps_order(checkpoint, art) -> None:
    """Knots strictly increasing (no plateau), and the exported ONNX step orders the sample's
    events exactly as the torch logits do: sorted by logit, the risks never fall, and they rise
    wherever the logits differ by more than float noise."""
    import numpy as np
    from riskstream_models.checkpoint import load_checkpoint
    from riskstream_models.data import load_events
    from riskstream_models.evaluate import rollout

    model, _ = load_checkpoint(checkpoint)
    for k in range(model.calib_x.shape[0]):
        xs, ys = model.calib_x[k].numpy().astype(float), model.calib_y[k].numpy().astype(float)
        n = len(xs)
        while n > 1 and xs[n - 1] == xs[n - 2]:  # the padding repeats the last knot
            n -= 1
        assert n >= 3 and np.all(np.diff(xs[:n]) > 0) and np.all(np.diff(ys[:n]) > 0)
    man = json.loads((art / "manifest.json").read_text())
    ev = load_events(SAMPLE, features=[f["name"] for f in man["features"]])
    risk = rollout(art, ev)[:, 0].astype(np.float64)
    logit = np.zeros(len(risk))
    dt_all = ev.dt()
    with torch.no_grad():
        for a, b in zip(ev.starts[:-1], ev.starts[1:], strict=True):
            d, _ = model.memory.sequence(
                torch.from_numpy(ev.x[a:b, None, :]), torch.from_numpy(dt_all[a:b, None, None])
            )
            rec = model.zero_states(1)[: len(model.cfg.state_names()) - int(model.cfg.memory)]
            z, _ = model.network(d, rec, seq=True)
            logit[a:b] = z[:, 0, 0].numpy()
    order = np.argsort(logit, kind="stable")
    dz, dr = np.diff(logit[order]), np.diff(risk[order])
    assert np.all(dr[dz > 1e-4] > 0) and np.all(dr > -1e-6)


def test_aux_targets_on_sample():
    import numpy as np
    from riskstream_models.data import load_events, make_labels
    from riskstream_models.train import aux_targets

    ev = load_events(SAMPLE)
    aki, keep, _ = make_labels(ev)
    y, w = aux_targets(ev, ["aki24", "creat48"], keep)
    assert np.all(y[:, 0] <= aki) and np.array_equal(w[:, 0] > 0, keep)  # nested horizons
    ci = ev.features.index("Creatinine")
    for a, b in zip(ev.starts[:20], ev.starts[1:21], strict=True):
        t, c = ev.time[a:b], ev.x[a:b, ci]
        for i in range(b - a):
            past, fut = c[: i + 1][~np.isnan(c[: i + 1])], (t > t[i]) & (t <= t[i] + 48)
            fut = c[fut][~np.isnan(c[fut])]
            ok = len(past) > 0 and len(fut) > 0 and keep[a + i]
            assert bool(w[a + i, 1]) == ok
            if ok:
                assert y[a + i, 1] == np.float32(np.clip(fut.max() - past[-1], -5, 5))


def test_train_with_ema_memory_and_aux(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = {
        "hidden": 8,
        "head_hidden": 8,
        "key_labs": ["Creatinine"],
        "ema_hours": [6, 24],
        "key_windows": [24],
        "input_dropout": 0.2,
        "aux": ["aki24", "creat48"],
    }
    cfg = load_config(
        None,
        [f"data.path={SAMPLE}", f"model={json.dumps(model)}", "train.epochs=1", "out=run"],
    )
    res = run(cfg)
    assert 0 <= res["val"]["aki_auroc"] <= 1
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    mc = ModelConfig(**saved["model_config"])
    assert mc.ema_hours == [6, 24] and mc.aux == ["aki24", "creat48"]
    f = len(mc.features)  # the memory carries 5 running statistics per variable and half-life
    assert mc.state_shapes()["m"] == [1, 1 + 4 * f + 2 + 3 * mc.ring + 5 * f * 2]
    # the auxiliary head learned: its loss reached it (with no gradient AdamW leaves it as built)
    torch.manual_seed(cfg["train"]["seed"])
    built = RiskModel(mc).state_dict()
    aux = [k for k in built if k.startswith("aux_head.")]
    assert aux and all(not torch.equal(saved["state_dict"][k], built[k]) for k in aux)
