"""Write the small committed PhysioNet sample: `python -m riskstream_models.sample [OUT]`.

200 patients of set A, chosen deterministically (seed 0): 60 with an AKI onset, 40 with sepsis
(and no AKI onset), 100 others.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from .data import SETA, load_events, make_labels

OUT = "models/data/physionet2019-sample.parquet"


def main(argv=None) -> None:
    out = (argv or sys.argv[1:] or [OUT])[0]
    ev = load_events(SETA)
    _, _, onset = make_labels(ev)
    ents = ev.entities()
    seg = np.repeat(np.arange(len(ents)), np.diff(ev.starts))
    aki = np.bincount(seg, weights=onset, minlength=len(ents)) > 0
    sep = np.bincount(seg, weights=ev.sepsis, minlength=len(ents)) > 0
    rng = np.random.default_rng(0)
    pick = lambda mask, n: rng.choice(np.sort(ents[mask]), n, replace=False)  # noqa: E731
    chosen = np.concatenate([pick(aki, 60), pick(sep & ~aki, 40), pick(~aki & ~sep, 100)])
    df = pd.read_parquet(SETA)
    df = (
        df[df.patient_id.isin(set(chosen))]
        .sort_values(["patient_id", "hour"])
        .reset_index(drop=True)
    )
    df.to_parquet(out, compression="zstd", index=False)
    print(f"{out}: {df.patient_id.nunique()} patients, {len(df)} rows")


if __name__ == "__main__":
    main()
