"""evaluate: steps the exported ONNX model over an event table (no torch needed)."""

import json

import pandas as pd
from riskstream_models.evaluate import main

TINY = "tests/fixtures/models/tiny/0.1.0"
SAMPLE = "models/data/physionet2019-sample.parquet"


def test_evaluate_sample_slice(tmp_path, capsys):
    df = pd.read_parquet(SAMPLE)
    keep = sorted(df.patient_id.unique())[:40]
    df[df.patient_id.isin(keep)].to_csv(tmp_path / "slice.csv", index=False)
    assert (
        main(
            [
                "--model",
                TINY,
                "--data",
                str(tmp_path / "slice.csv"),
                "--report",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["data"]["entities"] == 40
    for name in ("aki_48h", "sepsis"):
        for key in ("auroc", "auprc", "prevalence", "ece"):
            assert 0.0 <= res[name][key] <= 1.0
    assert 0.0 <= res["aki_48h"]["episode_sensitivity_at_precision_33"] <= 1.0
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "aki_48h.png").exists()
