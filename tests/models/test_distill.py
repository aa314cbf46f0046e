"""Distillation from LightGBM: out-of-fold teacher probabilities and the soft training targets."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("lightgbm")

import torch
from riskstream_models.data import FEATURES, load_events, make_labels
from riskstream_models.distill import folds
from riskstream_models.distill import run as teacher
from riskstream_models.export import SAMPLE
from riskstream_models.model import ModelConfig, RiskModel
from riskstream_models.train import Prepared, load_config, run, soft_targets


def test_folds_partition_entities():
    f = folds(103, 5, seed=0)
    assert sorted(np.bincount(f)) == [20, 20, 21, 21, 21]
    assert not np.array_equal(f, np.arange(103) % 5)  # shuffled
    assert np.array_equal(f, folds(103, 5, seed=0))


def test_soft_targets_mix_only_given_rows():
    y = np.array([0, 1, 1, 0], np.float32)
    t = np.array([np.nan, 0.2, 0.6, np.nan], np.float32)
    s = soft_targets(y, t, 0.25, np.array([1, 2]))
    assert np.allclose(s, [0, 0.25 * 0.2 + 0.75, 0.25 * 0.6 + 0.75, 0]) and s.dtype == np.float32
    assert np.array_equal(soft_targets(y, t, 0.0, np.array([1, 2])), y)
    with pytest.raises(AssertionError):  # a training hour without a teacher probability
        soft_targets(y, t, 0.5, np.array([0, 1]))


def test_oof_teacher_aligned_to_train_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/cache lands here
    res = teacher(SAMPLE, "teacher/oof.npz", k=2, threads=1)
    assert 0.5 < res["aki"]["oof_auroc"] <= 1
    cfg = load_config(
        None,
        [
            f"data.path={SAMPLE}",
            'model={"hidden": 8, "head_hidden": 8, "key_labs": ["Creatinine"]}',
            "train.distill=0.5",
            "train.distill_sepsis=0.3",
            "train.teacher=teacher/oof.npz",
            "train.epochs=1",
            "out=run",
        ],
    )
    model = RiskModel(ModelConfig(features=FEATURES, **cfg["model"]))
    prep = Prepared(cfg, model)
    oof = np.load("teacher/oof.npz")
    ev = load_events(SAMPLE)
    assert str(oof["fingerprint"]) == ev.fingerprint == prep.ev.fingerprint
    train = np.zeros(len(ev.time), bool)
    for i in prep.split["train"]:
        train[ev.starts[i] : ev.starts[i + 1]] = True
    for name in ("aki", "sepsis"):  # a probability for every training hour, none elsewhere
        assert np.array_equal(np.isfinite(oof[name]), train)
    aki, _, _ = make_labels(ev)
    assert np.allclose(prep.soft_aki[train], 0.5 * oof["aki"][train] + 0.5 * aki[train])
    assert np.allclose(prep.soft_sepsis[train], 0.3 * oof["sepsis"][train] + 0.7 * ev.sepsis[train])
    assert np.array_equal(prep.soft_aki[~train], aki[~train])  # val/calib/test keep the labels
    assert json.loads((tmp_path / "teacher" / "oof.json").read_text())["aki"]["oof_auprc"] > 0

    distilled = run(cfg)
    labels_only = run(
        {**cfg, "train": {**cfg["train"], "distill": None, "distill_sepsis": None}, "out": "plain"}
    )
    # the soft targets reach the loss: same seed, same batches, another training loss
    assert distilled["history"][0]["loss"] != labels_only["history"][0]["loss"]
    recorded = torch.load("run/model.pt", weights_only=False)["training_data"]["distillation"]
    assert recorded["aki_48h_alpha"] == 0.5 and recorded["sepsis_alpha"] == 0.3
    assert "out of fold over 2 patient folds" in recorded["teacher"]
    assert "distillation" not in torch.load("plain/model.pt", weights_only=False)["training_data"]
