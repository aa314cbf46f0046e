"""Inputs the model ignores: values for them change no risk, bit for bit, in the exported step.

Inputs seen in under ~1% of training hours (EtCO2, TroponinI, Bilirubin_direct in set A) keep
their random initial weights; at a site that measures them every value would inject noise.
"""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from riskstream_models.data import (
    PHYSIONET_FEATURES,
    PLAUSIBLE_RANGES,
    load_events,
    measured_share,
)
from riskstream_models.evaluate import rollout
from riskstream_models.export import SAMPLE, export
from riskstream_models.model import ModelConfig, RiskModel
from riskstream_models.train import DEFAULTS, fit_normalisation, rarely_measured

FEATURES = [f[0] for f in PHYSIONET_FEATURES]


def _data(ignore_below: float) -> dict:
    return {**DEFAULTS["data"], "path": SAMPLE, "ignore_below": ignore_below}


def test_rarely_measured_on_the_sample():
    ev = load_events(SAMPLE)
    share = measured_share(ev, ev.rows(ev.split(0)["train"]))
    rare = rarely_measured(_data(0.01), FEATURES)
    assert "EtCO2" in rare and "Creatinine" not in rare
    assert rare == [f for f in FEATURES if share[f] < 0.01]
    assert rarely_measured(_data(0.0), FEATURES) == []


def _inject(ev, names, rng):
    x = ev.x.copy()
    for f in names:
        lo, hi = PLAUSIBLE_RANGES[f]
        j = ev.features.index(f)
        hit = rng.random(len(x)) < 0.3  # measured in 30% of the hours
        x[hit, j] = rng.uniform(lo, min(hi, lo + 100), hit.sum()).astype(np.float32)
    return x


def test_ignored_inputs_change_no_risk(tmp_path):
    ignored = rarely_measured(_data(0.01), FEATURES)
    torch.manual_seed(0)
    ev = load_events(SAMPLE)
    model = RiskModel(
        ModelConfig(
            features=FEATURES,
            hidden=8,
            head_hidden=8,
            key_labs=["Creatinine"],
            ignored_features=ignored,
        )
    )
    fit_normalisation(model, ev, np.arange(len(ev.starts) - 1))
    man = export(model, tmp_path / "m", "ignoring", "0.0.1", {}, {}, ev)  # with parity check
    assert man["ignored_features"] == ignored
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["ignored_features"] == ignored
    # the test split's events, as recorded and with values injected for every ignored input
    test = load_events(SAMPLE, entities=list(ev.entities()[ev.split(0)["test"]]))
    base = rollout(tmp_path / "m", test)
    rng = np.random.default_rng(1)
    injected = _inject(test, ignored, rng)
    assert not np.array_equal(np.isnan(injected), np.isnan(test.x))
    test.x = injected
    assert np.array_equal(rollout(tmp_path / "m", test), base)
    # and the check has teeth: the same injection into an input the model reads changes risks
    test.x = _inject(test, ["Lactate"], rng)
    assert not np.array_equal(rollout(tmp_path / "m", test), base)
