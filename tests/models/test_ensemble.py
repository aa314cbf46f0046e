"""LightGBM over the memory features inside the same ONNX step: graph contract and parity."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lgb = pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

from riskstream_models.data import FEATURES, load_events  # noqa: E402
from riskstream_models.dataset import derived_features, fit_normalisation  # noqa: E402
from riskstream_models.ensemble import (  # noqa: E402
    Blend,
    build_graph,
    float32_thresholds,
    parity,
)
from riskstream_models.model import ModelConfig, RiskModel  # noqa: E402

SAMPLE = "models/data/physionet2019-sample.parquet"


def test_ensemble_step_parity(tmp_path):
    import onnx

    torch.manual_seed(0)
    import pandas as pd

    ids = sorted(pd.read_parquet(SAMPLE, columns=["patient_id"]).patient_id.unique())[:40]
    ev = load_events(SAMPLE, entities=ids)
    cfg = ModelConfig(features=FEATURES, layers=1, hidden=8, head_hidden=8, key_labs=["Creatinine"])
    model = RiskModel(cfg).eval()
    idx = np.arange(len(ev.starts) - 1)
    fit_normalisation(model, ev, idx)
    d = derived_features(model, ev, idx)
    rng = np.random.default_rng(0)
    trees = []
    for _ in range(2):
        y = (d[:, 0] + rng.normal(size=len(d)) > 0.5).astype(float)
        params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1}
        trees.append(float32_thresholds(lgb.train(params, lgb.Dataset(d, y), 10)))
    xk = np.tile(np.linspace(-4, 4, cfg.calib_knots), (2, 1))
    blend = Blend(np.array([0.3, 0.5]), xk, 1 / (1 + np.exp(-xk))).eval()
    g = build_graph(model, trees, blend)
    path = tmp_path / "model.onnx"
    onnx.save(g, str(path))
    assert [i.name for i in g.graph.input] == ["x", "dt", "h", "c", "m"]
    assert [o.name for o in g.graph.output] == ["risk", "h_next", "c_next", "m_next"]
    assert parity(model, trees, blend, path, ev) <= 1e-5
