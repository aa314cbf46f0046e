"""Inject plausible values for the inputs measured in under 1% of set A hours into the test
split and compare AKI-48h risks and AUROC/AUPRC (README, "Inputs the model ignores").

    PYTHONPATH=. python models/experiments/inject_rare.py models/aki-lstm/1.2.0
"""

import json
import sys
from pathlib import Path

import numpy as np
from riskstream_models.data import (
    SETA,
    load_events,
    make_labels,
    split_entities,
)
from riskstream_models.evaluate import rollout
from riskstream_models.metrics import binary_report

m = sys.argv[1]
man = json.loads(Path(m, "manifest.json").read_text())
ents = load_events(SETA).entities()
ev = load_events(
    SETA,
    features=[f["name"] for f in man["features"]],
    entities=list(split_entities(ents, 0)["test"]),
)
y, keep, _ = make_labels(ev)
base = rollout(m, ev)[:, 0]
rng = np.random.default_rng(1)
for f in ["EtCO2", "TroponinI", "Bilirubin_direct", "Fibrinogen"]:
    j = ev.features.index(f)
    hit = rng.random(len(ev.x)) < 0.3
    lo, hi = {
        "EtCO2": (25, 50),
        "TroponinI": (0.01, 2),
        "Bilirubin_direct": (0.1, 2),
        "Fibrinogen": (150, 500),
    }[f]
    ev.x[hit & np.isnan(ev.x[:, j]), j] = rng.uniform(lo, hi, (hit & np.isnan(ev.x[:, j])).sum())
inj = rollout(m, ev)[:, 0]
a, b = binary_report(y[keep], base[keep]), binary_report(y[keep], inj[keep])
print(
    json.dumps(
        {
            "model": m,
            "base": [a["auroc"], a["auprc"]],
            "injected": [b["auroc"], b["auprc"]],
            "max_abs_risk_change": float(np.abs(inj - base).max()),
            "median_abs_risk_change": float(np.median(np.abs(inj - base))),
            "distinct_risks_base": len(np.unique(base[keep])),
            "hours": int(keep.sum()),
        }
    )
)
