r"""Evaluate an exported model by stepping its ONNX graph over every event, as the service does.

    riskstream evaluate --model models/aki-lstm/1.2.0 \
        --data /work/shared/data/physionet2019/setA.parquet --split test [--report DIR]

No torch: onnxruntime, numpy, scikit-learn (matplotlib only for --report).
Prints JSON: per output AUROC, AUPRC, prevalence, ECE; for AKI also the episode sensitivity and
the alert rate at the threshold where hour-level precision is 33%.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from .data import EventTable, load_events, make_labels, split_entities
from .metrics import aki_report, binary_report


def rollout(
    model_dir: str | Path, ev: EventTable, batch: int = 512, progress: bool = False
) -> np.ndarray:
    """Risk (N, K) for every event: batches of entities, one ONNX step per event, states carried.
    ``progress``: a bar of the events scored on stderr, if stderr is a terminal."""
    man = json.loads((Path(model_dir) / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(
        str(Path(model_dir) / man["onnx"]["file"])
        if "onnx" in man
        else str(Path(model_dir) / "model.onnx"),
        opts,
        providers=["CPUExecutionProvider"],
    )
    names = [s["name"] for s in man["states"]]
    risk = np.zeros((len(ev.time), len(man["outputs"])), np.float32)
    dt_all = ev.dt()
    n = np.diff(ev.starts)
    order = np.argsort(n, kind="stable")
    shown = tqdm(
        total=len(ev.time),
        desc="evaluate",
        unit="event",
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
        leave=False,
        dynamic_ncols=True,
        mininterval=0.25,
    )
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        B = len(idx)
        states = {
            s["name"]: np.zeros((s["shape"][0], B, s["shape"][1]), np.float32)
            for s in man["states"]
        }
        for t in range(int(n[idx].max())):
            live = t < n[idx]
            rows = ev.starts[idx] + np.minimum(t, n[idx] - 1)
            x = np.where(live[:, None], ev.x[rows], np.nan).astype(np.float32)
            dt = np.where(live, dt_all[rows], 0).astype(np.float32)[:, None]
            out = sess.run(None, {"x": x, "dt": dt, **states})
            risk[rows[live]] = out[0][live]
            states = dict(zip(names, out[1:], strict=True))
            shown.update(int(live.sum()))
    shown.close()
    return risk


def evaluate(
    model_dir,
    data_file,
    report_dir=None,
    split: str | None = None,
    seed: int = 0,
    entity: str = "patient_id",
    time: str = "hour",
    progress: bool = False,
) -> dict:
    """Score every event of data_file (or its `split` of entities) and return metrics per output."""
    man = json.loads((Path(model_dir) / "manifest.json").read_text())
    feats = [f["name"] for f in man["features"]]
    ents = None
    if split:
        import pandas as pd

        all_ents = (
            pd.read_parquet(data_file, columns=[entity])
            if str(data_file).endswith(".parquet")
            else pd.read_csv(data_file, usecols=[entity])
        )
        ents = list(split_entities(all_ents[entity].astype(str).to_numpy(), seed)[split])
    ev = load_events(data_file, entity, time, feats, entities=ents)
    risk = rollout(model_dir, ev, progress=progress)
    label, keep, onset = make_labels(ev)
    res = {
        "data": {
            "file": str(data_file),
            "split": split,
            "entities": len(ev.starts) - 1,
            "events": len(ev.time),
            "fingerprint": ev.fingerprint,
        }
    }
    for k, o in enumerate(man["outputs"]):
        if o["name"].startswith("aki"):
            res[o["name"]] = aki_report(risk[:, k], label, keep, ev.entity, ev.time, onset)
        elif o["name"] == "sepsis" and ev.sepsis is not None:
            res[o["name"]] = binary_report(ev.sepsis, risk[:, k])
    if report_dir:
        from .report import write_report

        write_report(report_dir, man, res, risk, label, keep, ev.sepsis)
    return res


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model", required=True, help="artifact folder with model.onnx + manifest.json"
    )
    ap.add_argument("--data", required=True, help="event table (Parquet or CSV)")
    ap.add_argument("--report", help="write a Markdown report with plots to this folder")
    ap.add_argument(
        "--split",
        choices=["train", "val", "calib", "test"],
        help="evaluate only this patient split (same seeded split as training)",
    )
    ap.add_argument("--seed", type=int, default=0, help="split seed")
    ap.add_argument(
        "--entity", default="patient_id", help="the entity id column (default: %(default)s)"
    )
    ap.add_argument(
        "--time", default="hour", help="the event time column, in hours (default: %(default)s)"
    )
    ap.add_argument(
        "--quiet", action="store_true", help="no progress bar (drawn on stderr if a terminal)"
    )
    return ap


def main(argv=None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    res = evaluate(
        args.model,
        args.data,
        args.report,
        args.split,
        args.seed,
        args.entity,
        args.time,
        progress=not args.quiet,
    )
    json.dump(res, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
