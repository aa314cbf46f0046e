"""Markdown report with ROC, precision-recall and reliability plots (used by evaluate --report)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve


def write_report(out, manifest, res, risk, label, keep, sepsis) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Evaluation of {manifest['name']} {manifest['version']}",
        "",
        f"Data: `{res['data']['file']}` split `{res['data']['split']}`, "
        f"{res['data']['entities']} entities, {res['data']['events']} events.",
        "",
    ]
    for k, o in enumerate(manifest["outputs"]):
        name = o["name"]
        if name not in res:
            continue
        y, p = (label[keep], risk[keep, k]) if name.startswith("aki") else (sepsis, risk[:, k])
        fig, ax = plt.subplots(1, 3, figsize=(13, 4))
        fpr, tpr, _ = roc_curve(y, p)
        ax[0].plot(fpr, tpr)
        ax[0].plot([0, 1], [0, 1], "k:")
        ax[0].set(title=f"ROC (AUROC {res[name]['auroc']:.3f})", xlabel="FPR", ylabel="TPR")
        prec, rec, _ = precision_recall_curve(y, p)
        ax[1].plot(rec, prec)
        ax[1].axhline(y.mean(), color="k", ls=":")
        ax[1].set(title=f"PR (AUPRC {res[name]['auprc']:.3f})", xlabel="recall", ylabel="precision")
        bins = np.minimum((p * 10).astype(int), 9)
        xs = [p[bins == b].mean() for b in range(10) if (bins == b).any()]
        ys = [y[bins == b].mean() for b in range(10) if (bins == b).any()]
        ax[2].plot(xs, ys, "o-")
        ax[2].plot([0, 1], [0, 1], "k:")
        ax[2].set(
            title=f"reliability (ECE {res[name]['ece']:.3f})", xlabel="predicted", ylabel="observed"
        )
        fig.suptitle(name)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=80)
        plt.close(fig)
        lines += [
            f"## {name}",
            "",
            "```json",
            json.dumps(res[name], indent=2),
            "```",
            "",
            f"![{name}]({name}.png)",
            "",
        ]
    (out / "report.md").write_text("\n".join(lines))
