"""AUROC / AUPRC of a trees-over-memory blend by recurrent weight, on a pseudo-site's held-out
group (its val and test patients), from the checkpoint and the trees `ensemble` saved beside it.

    PYTHONPATH=models python models/experiments/blend_weights.py \
        runs/ps-admission_start/model.pt admission_start_held_out

Choose on the val line (the group's patients of the val split: pseudo-site validation); the test
line is for the report only.
"""

import json
import sys

import lightgbm as lgb
import numpy as np
import torch
from riskstream_models.checkpoint import load_checkpoint
from riskstream_models.pseudosite import SPLITS, entity_groups
from riskstream_models.train import Prepared, logits_for
from sklearn.metrics import average_precision_score, roc_auc_score


def main(checkpoint: str, split: str) -> None:
    torch.set_num_threads(1)
    model, ck = load_checkpoint(checkpoint)
    prep = Prepared(ck["cfg"], model)
    held = entity_groups(prep.ev)[SPLITS[split][0]]
    part = prep.ev.split(ck["cfg"]["data"]["split_seed"])
    booster = lgb.Booster(model_file=checkpoint.replace("model.pt", "trees-0.txt"))
    for s in ("val", "test"):
        idx = np.intersect1d(np.flatnonzero(held), part[s])
        z, rows = logits_for(model, prep, idx)
        k = prep.keep[rows]
        y, z = prep.aki[rows][k], z[k, 0]
        q = np.clip(booster.predict(prep.d[rows[k]]), 1e-6, 1 - 1e-6)
        lq = np.log(q / (1 - q))
        grid = {}
        for w in np.linspace(0, 1, 11):
            b = w * z + (1 - w) * lq
            grid[round(float(w), 1)] = [
                round(roc_auc_score(y, b), 4),
                round(average_precision_score(y, b), 4),
            ]
        print(s, len(idx), json.dumps(grid), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
