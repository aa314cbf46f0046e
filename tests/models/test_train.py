"""The training pipeline end to end on the small sample: train, calibrate, export, evaluate."""

import json

import pytest

pytest.importorskip("torch")

from models.riskstream_models.export import SAMPLE
from models.riskstream_models.train import load_config, run


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
