"""pseudosite: held-out groups of set A (unit, record start), network (ONNX) vs LightGBM."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightgbm")

from riskstream_models.data import load_events, split_entities
from riskstream_models.pseudosite import SPLITS, entity_groups, main

TINY = "tests/fixtures/models/tiny/0.1.0"
SAMPLE = "models/data/physionet2019-sample.parquet"


def test_entity_groups_match_the_table():
    df = pd.read_parquet(SAMPLE)
    ev = load_events(SAMPLE)
    g = entity_groups(ev)
    per = df.groupby("patient_id")
    ents = ev.entities()
    micu = per.Unit1.max().reindex(ents).fillna(0).to_numpy() == 1
    sicu = per.Unit2.max().reindex(ents).fillna(0).to_numpy() == 1
    later = per.ICULOS.first().reindex(ents).to_numpy() > 1
    assert np.array_equal(g["micu"], micu) and np.array_equal(g["sicu"], sicu)
    assert np.array_equal(g["later_start"], later)
    assert np.array_equal(g["admission_start"], ~later)
    # every patient in exactly one unit group; each split's groups non-empty on the sample
    assert np.all(g["micu"].astype(int) + g["sicu"] + g["unit_unknown"] == 1)
    for group, _ in SPLITS.values():
        assert 0 < g[group].sum() < len(ents)


def test_pseudosite_end_to_end_on_sample(tmp_path, capsys):
    out = tmp_path / "ps"
    argv = ["--model", TINY, "--data", SAMPLE, "--out", str(out), "--threads", "1"]
    argv += ["--model-for", f"micu_held_out={TINY}", "--write-splits", str(tmp_path / "splits")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "result.json").read_text())
    assert set(res["splits"]) == set(SPLITS) and "pooled" in res
    assert (out / "table.md").read_text().strip() in printed
    ev = load_events(SAMPLE)
    g = entity_groups(ev)
    ents = ev.entities()
    part = split_entities(ents, 0)
    test, train = np.isin(ents, part["test"]), np.isin(ents, part["train"])
    for name, (group, _) in SPLITS.items():
        r = res["splits"][name]
        # evaluated on the held-out group's TEST patients only; LightGBM fitted on the rest
        assert r["test_entities"] == int((g[group] & test).sum())
        assert r["train_entities"] == int((~g[group] & train).sum())
        for m in ("network", "lightgbm", "lightgbm_pooled"):
            assert np.isnan(r[m]["auroc"]) or 0.0 <= r[m]["auroc"] <= 1.0
        doc = json.loads((tmp_path / "splits" / f"{name}.json").read_text())
        assert not set(doc["train"]) & set(doc["test"])
        assert set(doc["test"]) == set(ents[g[group] & test])
    assert res["pooled"]["test_entities"] == int(test.sum())
    # on the pooled row the two LightGBM models are the same one
    assert json.dumps(res["pooled"]["lightgbm"]) == json.dumps(res["pooled"]["lightgbm_pooled"])
    assert res["worst"]["network_auroc"]["split"] in SPLITS
    # a second network reuses those LightGBM rows (they do not depend on the network)
    again = tmp_path / "again"
    argv = ["--model", TINY, "--data", SAMPLE, "--out", str(again), "--no-pooled"]
    assert main([*argv, "--lightgbm-from", str(out / "result.json")]) == 0
    res2 = json.loads((again / "result.json").read_text())
    for name in SPLITS:
        assert json.dumps(res2["splits"][name]["lightgbm"]) == json.dumps(
            res["splits"][name]["lightgbm"]
        )
        assert json.dumps(res2["splits"][name]["network"]) == json.dumps(
            res["splits"][name]["network"]
        )


def test_training_on_a_pseudo_site_side(tmp_path, monkeypatch):
    """train.py's data.site_split keeps only the split's training side (to retrain per split)."""
    pytest.importorskip("torch")
    from riskstream_models.model import ModelConfig, RiskModel
    from riskstream_models.pseudosite import write_splits
    from riskstream_models.train import Prepared, load_config

    sample = str(Path(SAMPLE).resolve())
    monkeypatch.chdir(tmp_path)
    write_splits(sample, "splits")
    cfg = load_config(None, [f"data.path={sample}", "data.site_split=splits/sicu_held_out.json"])
    model = RiskModel(
        ModelConfig(
            features=load_events(sample).features, hidden=8, head_hidden=8, key_labs=["Creatinine"]
        )
    )
    prep = Prepared(cfg, model)
    ents = prep.ev.entities()
    sicu = entity_groups(prep.ev)["sicu"]
    full = split_entities(ents, 0)
    for k in ("train", "val", "calib"):
        assert not sicu[prep.split[k]].any()
        assert set(ents[prep.split[k]]) == set(full[k]) - set(ents[sicu])
    assert set(ents[prep.split["test"]]) == set(full["test"])


def test_network_rows_only(tmp_path, capsys):
    """--no-lightgbm: the network's rows (per split and pooled), no LightGBM fitted or shown."""
    out = tmp_path / "ps"
    argv = ["--model", TINY, "--data", SAMPLE, "--out", str(out), "--no-lightgbm"]
    assert main(argv) == 0
    res = json.loads((out / "result.json").read_text())
    rows = [*res["splits"].values(), res["pooled"]]
    assert all("lightgbm" not in r and 0 <= r["network"]["auroc"] <= 1 for r in rows)
    printed = capsys.readouterr().out
    assert "LightGBM" not in printed and "| pooled | " in printed
