"""AKI labels on hand-made sequences, and no look-ahead in labels or baseline features."""

import numpy as np
import pytest
from riskstream_models.data import aki_labels, aki_onsets


def creat(n, values):
    c = np.full(n, np.nan)
    for t, v in values.items():
        c[t] = v
    return np.arange(n, dtype=float), c


@pytest.mark.parametrize(
    ("values", "onset_at"),
    [
        ({0: 1.0, 10: 1.3}, [10]),  # +0.3 within 48 h
        ({0: 1.0, 10: 1.29}, []),  # just below
        ({0: 1.0, 48: 1.35}, [48]),  # 48 h before is inside the window
        ({0: 1.0, 49: 1.35}, []),  # 49 h: outside 48 h, and 1.35 < 1.5 x 1.0
        ({0: 1.0, 100: 1.5}, [100]),  # 1.5 x the 168 h minimum
        ({0: 1.0, 169: 1.5}, []),  # baseline too old
        ({0: 2.0, 5: 1.0, 20: 1.3}, [20]),  # lowest in the window counts, not the first
        ({0: 1.0, 30: 1.1, 40: 1.4, 45: 1.8}, [40, 45]),
        ({3: 1.5}, []),  # a single value is never an onset
    ],
)
def test_onsets(values, onset_at):
    t, c = creat(200, values)
    assert list(np.flatnonzero(aki_onsets(t, c))) == onset_at


def test_label_window_and_keep():
    t, c = creat(120, {0: 1.0, 60: 1.6, 100: 2.5})
    label, keep = aki_labels(t, c)
    assert list(np.flatnonzero(label)) == list(range(12, 100))  # onsets 60 and 100 in (t, t+48]
    assert keep[:60].all() and not keep[60:].any()  # only hours before the first onset
    assert label[keep].sum() == 48  # hours 12..59


def test_no_onset_no_label():
    t, c = creat(80, {0: 1.0, 30: 1.1})
    label, keep = aki_labels(t, c)
    assert label.sum() == 0 and keep.all()


def test_labels_do_not_look_beyond_horizon():
    rng = np.random.default_rng(0)
    t = np.arange(300, dtype=float)
    c = np.where(rng.random(300) < 0.2, rng.uniform(0.5, 3, 300), np.nan)
    on, (label, _) = aki_onsets(t, c), aki_labels(t, c)
    c2 = c.copy()
    c2[150:] = np.where(rng.random(150) < 0.5, rng.uniform(0.5, 3, 150), np.nan)
    on2, (label2, _) = aki_onsets(t, c2), aki_labels(t, c2)
    assert (on[:150] == on2[:150]).all()  # onsets use the past only
    assert (label[: 150 - 48] == label2[: 150 - 48]).all()  # labels see 48 h ahead, no further


def test_baseline_features_no_look_ahead():
    pytest.importorskip("lightgbm")
    from riskstream_models.baselines import history_features
    from riskstream_models.data import load_events

    ev = load_events("models/data/physionet2019-sample.parquet")
    a = history_features(ev).to_numpy()
    cut = ev.starts[:-1] + np.diff(ev.starts) // 2  # perturb the second half of every patient
    future = np.zeros(len(ev.time), bool)
    for c, e in zip(cut, ev.starts[1:], strict=True):
        future[c:e] = True
    ev.x[future] = ev.x[future] * 1.7 + 3.0
    b = history_features(ev).to_numpy()
    np.testing.assert_array_equal(a[~future], b[~future])
    assert not np.array_equal(a[future], b[future], equal_nan=True)


def test_loader_any_table_datetime_time(tmp_path):
    import pandas as pd
    from riskstream_models.data import load_events, make_labels

    t0 = pd.Timestamp("2026-01-01 08:00")
    df = pd.DataFrame(
        {
            "stay": ["b", "a", "a", "a", "b"],
            "charttime": [t0, t0 + pd.Timedelta(hours=2.5), t0, t0 + pd.Timedelta(hours=30), t0],
            "Creatinine": [1.0, 1.0, 0.9, 1.4, np.nan],
            "HR": [80, 90, 85, np.nan, 70],
        }
    )
    df.to_csv(tmp_path / "events.csv", index=False)
    ev = load_events(tmp_path / "events.csv", "stay", "charttime", ["HR", "Creatinine", "Age"])
    assert list(ev.entity) == ["a", "a", "a", "b", "b"]
    np.testing.assert_allclose(ev.time, [0, 2.5, 30, 0, 0])
    np.testing.assert_allclose(ev.dt(), [0, 2.5, 27.5, 0, 0])
    assert np.isnan(ev.x[:, 2]).all()  # no Age column: never measured
    label, keep, onset = make_labels(ev)
    assert list(onset) == [False, False, True, False, False]  # 1.4 >= 0.9 + 0.3 within 48 h
    assert list(label) == [1, 1, 0, 0, 0] and list(keep) == [True, True, False, True, True]
