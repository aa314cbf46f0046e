"""Checkpoints written by `train` (or averaged by `experiments/average.py`): load, export.

    python -m riskstream_models.checkpoint --checkpoint runs/aki-lstm/model.pt \
        --out models/aki-lstm/1.0.0 [--name aki-lstm --version 1.0.0]

Below `train`, `ensemble` and `adapt`, above `model` and `export`: nothing here imports them, so
the modules form no cycle (model/data < export < checkpoint < train < ensemble < adapt).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from .average import AverageModel
from .data import SAMPLE, load_events
from .evaluate import evaluate
from .export import export
from .model import ModelConfig, RiskModel


def load_checkpoint(path) -> tuple[RiskModel, dict]:
    """(model in eval mode, the checkpoint dict) from a model.pt."""
    ck = torch.load(path, weights_only=False)
    if "average" in ck:  # several networks averaged in one step
        model = AverageModel([load_checkpoint(p)[0] for p in ck["average"]])
        model.load_state_dict(ck["state_dict"])
        model.cfg.calibration = "isotonic"
        return model.eval(), ck
    model = RiskModel(ModelConfig(**ck["model_config"]))
    # half_life follows from the config (a buffer some experiment checkpoints stored)
    sd = {k: v for k, v in ck["state_dict"].items() if k != "memory.half_life"}
    model.load_state_dict(sd)
    return model.eval(), ck


def export_checkpoint(path, out, name, version) -> dict:
    """Export a checkpoint, evaluate the ONNX step on the test split, write it into the manifest."""
    model, ck = load_checkpoint(path)
    d = ck["cfg"]["data"]
    export(model, out, name, version, ck["training_data"], {}, load_events(SAMPLE))
    res = evaluate(out, d["path"], split="test", seed=d["split_seed"])
    man_path = Path(out) / "manifest.json"
    man = json.loads(man_path.read_text())
    man["evaluation"] = {"split": f"test (seed {d['split_seed']})", **res}
    man_path.write_text(json.dumps(man, indent=2) + "\n")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, help="a model.pt written by train.py")
    ap.add_argument("--out", required=True, help="artifact folder models/<name>/<version>")
    ap.add_argument("--name", default="aki-lstm")
    ap.add_argument("--version", default="1.0.0")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    export_checkpoint(args.checkpoint, args.out, args.name, args.version)


if __name__ == "__main__":
    main()
