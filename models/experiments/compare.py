"""Collect runs/*/result.json (train.py, baselines.py) into the Markdown table of models/README.md.

python models/experiments/compare.py runs/baselines runs/aki-lstm runs/no-memory ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(run: Path) -> list[str]:
    r = json.loads((run / "result.json").read_text())
    if "lightgbm" in r:  # baselines.py
        out = []
        for name in ("lightgbm", "logreg"):
            if name in r:
                a, s = r[name]["aki_48h"], r[name]["sepsis"]
                out.append(
                    f"| {name} ({run}) | {a['auroc']:.3f} | {a['auprc']:.3f} | "
                    f"{a['episode_sensitivity_at_precision_33']:.2f} | {s['auroc']:.3f} | "
                    f"– | {r[name]['seconds']:.0f} s |"
                )
        return out
    t, m = r["test"], r["config"]["model"]
    ev = r.get("evaluation", {}).get("aki_48h", {}) or r.get("test_aki", {})
    sens = f"{ev['episode_sensitivity_at_precision_33']:.2f}" if ev else "–"
    desc = ", ".join(f"{k}={v}" for k, v in m.items())
    best = max(r["history"], key=lambda h: h["aki_auprc"])["epoch"]
    return [
        f"| {run.name}: {desc} | {t['aki_auroc']:.3f} | {t['aki_auprc']:.3f} | {sens} | "
        f"{t['sepsis_auroc']:.3f} | {r['params']:,} | {r['train_seconds']:.0f} s "
        f"(best epoch {best}/{len(r['history'])}) |"
    ]


def main(argv=None) -> None:
    print(
        "| model | AKI-48h AUROC | AKI-48h AUPRC | episodes caught @33% precision "
        "| sepsis AUROC | parameters | training time |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run in argv or sys.argv[1:]:
        for line in rows(Path(run)):
            print(line)


if __name__ == "__main__":
    main()
