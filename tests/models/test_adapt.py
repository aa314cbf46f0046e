"""`riskstream adapt`: an artifact rebuilt from its own ONNX weights, adapted end to end on a small
slice (from a file and from the service's events table), and KDIGO labels from logged events."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
lgb = pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from riskstream.adapters.onnx_model import OnnxRiskModel  # noqa: E402
from riskstream.adapters.sql.database import migrate  # noqa: E402
from riskstream.adapters.sql.event_log import export_event_log  # noqa: E402
from riskstream.adapters.sql.tables import events  # noqa: E402
from riskstream.cli import main as riskstream  # noqa: E402
from riskstream_models.adapt import Artifact  # noqa: E402
from riskstream_models.data import FEATURES, load_events, make_labels  # noqa: E402
from riskstream_models.dataset import derived_features, fit_normalisation  # noqa: E402
from riskstream_models.ensemble import Blend, build_graph, write_artifact  # noqa: E402
from riskstream_models.export import onnx_rollout  # noqa: E402
from riskstream_models.model import ModelConfig, RiskModel  # noqa: E402
from riskstream_models.train import isotonic_knots  # noqa: E402

from tests.support.paths import PROJECT_ROOT  # noqa: E402

SAMPLE = PROJECT_ROOT / "models/data/physionet2019-sample.parquet"
T0 = dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trees-over-memory artifact (LSTM 1x8 + LightGBM per output) trained on the sample."""
    torch.manual_seed(0)
    ev = load_events(SAMPLE)
    cfg = ModelConfig(
        features=FEATURES,
        layers=1,
        hidden=8,
        head_hidden=8,
        key_labs=["Creatinine"],
        ignored_features=["EtCO2"],
        calibration="isotonic",
    )
    model = RiskModel(cfg).eval()
    idx = np.arange(len(ev.starts) - 1)
    fit_normalisation(model, ev, idx)
    d = derived_features(model, ev, idx)
    aki, keep, _ = make_labels(ev)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": 0}
    trees = [
        lgb.train(params, lgb.Dataset(d[keep], aki[keep]), 15),
        lgb.train(params, lgb.Dataset(d, ev.sepsis), 15),
    ]
    xk, yk = [], []
    for k, (y, m) in enumerate([(aki, keep), (ev.sepsis, np.ones_like(keep))]):
        q = np.clip(trees[k].predict(d[m]), 1e-6, 1 - 1e-6)
        xs, ys = isotonic_knots(np.log(q / (1 - q)), y[m], cfg.calib_knots)
        xk.append(xs)
        yk.append(ys)
    blend = Blend(np.array([0.3, 0.5]), np.stack(xk), np.stack(yk)).eval()
    out = tmp_path_factory.mktemp("base") / "tiny-gbm" / "0.1.0"
    training = {"name": "the sample", "fingerprint": ev.fingerprint}
    write_artifact(model, trees, blend, out, "tiny-gbm", "0.1.0", training, ev, {"trees": "test"})
    return out


def rollout(model_dir: Path, ev, n: int = 12) -> np.ndarray:
    from riskstream_models.dataset import padded

    man = json.loads((model_dir / "manifest.json").read_text())
    shapes = {s["name"]: s["shape"] for s in man["states"]}
    x, dt_, valid = padded(ev, np.arange(n))
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return onnx_rollout(sess, list(shapes), shapes, x.numpy(), dt_.numpy())[valid.numpy()]


def test_rebuilt_from_its_onnx_weights(base: Path, tmp_path: Path) -> None:
    """The network, trees, blend and calibration read back from the artifact make the same step."""
    art = Artifact(base)
    assert art.trees is not None and art.model.cfg.ignored_features == ["EtCO2"]
    g = build_graph(art.model, art.trees, Blend(art.w, art.xk, art.yk).eval())
    (tmp_path / "model.onnx").write_bytes(g.SerializeToString())
    (tmp_path / "manifest.json").write_text((base / "manifest.json").read_text())
    ev = load_events(SAMPLE)
    np.testing.assert_allclose(rollout(tmp_path, ev), rollout(base, ev), atol=1e-6, rtol=0)
    # and a fresh (random) network would not: the weights really come from model.onnx
    fresh = RiskModel(art.model.cfg)
    fresh.memory.load_state_dict(art.model.memory.state_dict())
    onnx.save(
        build_graph(fresh.eval(), art.trees, Blend(art.w, art.xk, art.yk).eval()),
        str(tmp_path / "model.onnx"),
    )
    assert np.abs(rollout(tmp_path, ev) - rollout(base, ev)).max() > 1e-4


def check_adapted(out: Path, base: Path, fingerprint: str, rows: int) -> dict:
    man = json.loads((out / "manifest.json").read_text())
    base_man = json.loads((base / "manifest.json").read_text())
    a = man["adaptation"]
    assert a["base_model"] == {
        "name": "tiny-gbm",
        "version": "0.1.0",
        "sha256": hashlib.sha256((base / "model.onnx").read_bytes()).hexdigest(),
    }
    assert a["data"]["fingerprint"] == fingerprint and a["data"]["rows"] == rows
    fig = a["figures"]["aki_48h"]
    assert {"val_before", "val_after", "alert_thresholds", "blend_weight_recurrent"} <= set(fig)
    assert fig["val_after"]["auprc"] >= fig["val_before"]["auprc"] - 1e-12  # epoch 0 competes
    up, down = fig["alert_thresholds"]
    assert 0 < down <= up <= 1
    assert man["version"] == "0.1.0-adapted" and man["ignored_features"] == ["EtCO2"]
    assert man["states"] == base_man["states"] and man["features"] == base_man["features"]
    assert man["onnx"]["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert man["onnx"]["parity_max_abs_diff"] <= 1e-5
    knots = man["cell"]["config"]["calibration_knots"]["aki_48h"]
    assert np.all(np.diff(knots["logit"]) > 0) and np.all(np.diff(knots["risk"]) > 0)
    # the service loads it and scores with it
    served = OnnxRiskModel(out)
    states = {
        s.name: np.zeros((s.shape[0], 2, s.shape[1]), np.float32) for s in served.manifest.states
    }
    x = np.full((2, len(FEATURES)), np.nan, np.float32)
    x[:, FEATURES.index("Creatinine")] = [0.9, 2.4]
    risk, _ = served.step(x, np.zeros((2, 1), np.float32), states)
    assert risk.shape == (2, 2) and np.all((risk > 0) & (risk < 1))
    return man


def test_adapt_a_file_end_to_end(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapted"
    rc = riskstream(
        ["adapt", "--model", str(base), "--data", str(SAMPLE), "--out", str(out), "--epochs", "3"]
    )
    assert rc == 0
    ev = load_events(SAMPLE)
    man = check_adapted(out, base, ev.fingerprint, len(ev.time))
    assert "sepsis" in man["adaptation"]["figures"]  # the sample has SepsisLabel


def log_events(url: str, frame: pd.DataFrame, minutes: np.ndarray | None = None) -> int:
    """Write the rows of an event table into the service's events table (real migrations)."""
    migrate(url)
    feats = [f for f in FEATURES if f in frame.columns]
    rows = []
    for i, r in enumerate(frame.itertuples(index=False)):
        offset = float(r.hour) * 60 if minutes is None else float(minutes[i])
        rows.append(
            {
                "score_id": f"{i:032x}",
                "entity_id": r.patient_id,
                "event_id": f"e{i}",
                "event_time": T0 + dt.timedelta(minutes=offset),
                "received_at": T0,
                "values": {
                    f: (None if pd.isna(getattr(r, f)) else float(getattr(r, f))) for f in feats
                },
            }
        )
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(events.insert(), rows)
    engine.dispose()
    return len(rows)


def test_adapt_from_the_event_log(base: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'riskstream.sqlite3'}"
    frame = pd.read_parquet(SAMPLE).drop(columns=["SepsisLabel"])
    n = log_events(url, frame)
    out = tmp_path / "adapted"
    rc = riskstream(
        ["adapt", "--model", str(base), "--from-log", url, "--out", str(out), "--epochs", "2"]
    )
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    check_adapted(out, base, man["adaptation"]["data"]["fingerprint"], n)
    assert man["adaptation"]["data"]["entities"] == frame.patient_id.nunique()
    # no sepsis labels in a log: the sepsis output keeps its blend weight and calibration
    assert "sepsis" not in man["adaptation"]["figures"]
    base_man = json.loads((base / "manifest.json").read_text())
    cal = "calibration_knots"
    assert man["cell"]["config"][cal]["sepsis"] == base_man["cell"]["config"][cal]["sepsis"]
    assert man["cell"]["ensemble"]["blend_weight_recurrent"][1] == 0.5


def test_kdigo_labels_from_logged_events(tmp_path: Path) -> None:
    """Labels from the events table equal those from the source table, at irregular times too."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    frame = pd.read_parquet(SAMPLE)
    frame = frame[frame.patient_id.isin(sorted(frame.patient_id.unique())[:60])]
    # one more entity with irregular event times: creatinine 1.0 at 0 h, 1.1 at 10.5 h, 1.45 at
    # 30.25 h (+0.45 over the 48 h minimum: an onset), then 1.2 at 40 h
    extra = pd.DataFrame(
        {"patient_id": "zz-irregular", "hour": [0, 1, 2, 3], "Creatinine": [1.0, 1.1, 1.45, 1.2]}
    )
    minutes = np.r_[frame.hour.to_numpy() * 60.0, [0, 630, 1815, 2400]]
    log_events(url, pd.concat([frame, extra], ignore_index=True), minutes)
    path = tmp_path / "events.parquet"
    export_event_log(url, path)
    logged = load_events(path, "entity_id", "event_time", FEATURES)
    source = load_events(SAMPLE, entities=sorted(frame.patient_id.unique()))
    n = len(source.time)
    got, want = make_labels(logged), make_labels(source)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g[:n], w)
    assert want[0].sum() > 0  # the slice has AKI hours: the comparison is not all zeros
    np.testing.assert_allclose(logged.time[n:], [0, 10.5, 30.25, 40])
    label, keep, onset = (v[n:] for v in got)
    assert onset.tolist() == [False, False, True, False]
    assert label.tolist() == [1, 1, 0, 0] and keep.tolist() == [True, True, False, False]


def test_the_shipped_ensemble_rebuilds_exactly(tmp_path: Path) -> None:
    """adapt's starting point for the shipped trees-over-memory artifact is that artifact."""
    shipped = PROJECT_ROOT / "models/aki-lstm-gbm/1.1.0"
    art = Artifact(shipped)
    assert art.trees is not None and art.w[0] == pytest.approx(0.3)
    g = build_graph(art.model, art.trees, Blend(art.w, art.xk, art.yk).eval())
    (tmp_path / "model.onnx").write_bytes(g.SerializeToString())
    (tmp_path / "manifest.json").write_text((shipped / "manifest.json").read_text())
    ev = load_events(SAMPLE)
    np.testing.assert_allclose(rollout(tmp_path, ev), rollout(shipped, ev), atol=1e-6, rtol=0)
