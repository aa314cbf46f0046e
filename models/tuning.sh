#!/bin/sh
# Seed noise of the default recipe, and one learning-rate variant (run from the repo root).
set -e
T="python -m models.riskstream_models.train --config models/configs/aki-lstm.json --set export=null"
$T --set out=runs/seed-1 --set train.seed=1
$T --set out=runs/seed-2 --set train.seed=2
$T --set out=runs/lr-1e-3 --set train.lr=0.001 --set train.patience=6
