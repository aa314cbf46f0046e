"""Average several trained networks in one step (research; built the opt-in aki-lstm 1.1.0).

    PYTHONPATH=models python models/experiments/average.py runs/aki-lstm/model.pt \
        runs/seed-1/model.pt runs/seed-2/model.pt --out runs/avg3

The networks must have been trained on the same split with the same memory config. The averaged
logit is calibrated again on the calib split; the checkpoint saved under --out is read by
`riskstream_models.checkpoint` (export) and `riskstream_models.ensemble` (trees on top).
"""

import argparse
import json
import os
from pathlib import Path

import torch
from riskstream_models.average import AverageModel
from riskstream_models.checkpoint import load_checkpoint
from riskstream_models.train import Prepared, quick_metrics
from riskstream_models.train import calibrate as fit_calibration


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    loaded = [load_checkpoint(p) for p in args.checkpoints]
    model = AverageModel([m for m, _ in loaded]).eval()
    assert model.cfg.memory, "averaging expects models with the feature memory"
    ck = loaded[0][1]
    prep = Prepared(ck["cfg"], model.nets[0])
    fit_calibration(model, prep, model.cfg.calib_knots)
    model.cfg.calibration = "isotonic"
    result = {
        "checkpoints": args.checkpoints,
        "val": quick_metrics(model, prep, "val"),
        "test": quick_metrics(model, prep, "test"),
    }
    print(json.dumps(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "average": args.checkpoints,
            "cfg": ck["cfg"],
            "training_data": ck["training_data"],
            "state_dict": model.state_dict(),
        },
        out / "model.pt",
    )
    (out / "result.json").write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
