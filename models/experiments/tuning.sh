#!/bin/sh
# Seed noise of the default recipe, and one learning-rate variant (run from the repo root).
set -e
T="python -m riskstream_models.train --config models/configs/aki-lstm.json --set export=null"
$T --set out=runs/seed-1 --set train.seed=1
$T --set out=runs/seed-2 --set train.seed=2
$T --set out=runs/lr-1e-3 --set train.lr=0.001 --set train.patience=6
# the memory ablation with the same two extra seeds
$T --set out=runs/no-memory-seed-1 --set model.memory=false --set train.seed=1
$T --set out=runs/no-memory-seed-2 --set model.memory=false --set train.seed=2
