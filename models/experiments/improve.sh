#!/bin/sh
# Attempts to close the gap to LightGBM with the pure recurrent model (issue 3), run from the repo
# root one at a time on one core (OMP_NUM_THREADS=1 taskset -c 1 ...). Rows of models/README.md.
set -e
T="python -m riskstream_models.train --config models/configs/aki-lstm.json --set export=null"
# the default recipe again, for its validation figures
$T --set out=runs/base
# exponentially weighted mean / decayed count / weighted trend of all 40 variables at half-lives
# 6, 24, 72 h in the memory, and 6/24/72 h key-lab windows
$T --set out=runs/ema --set 'model.ema_hours=[6,24,72]' --set 'model.key_windows=[6,24,72]'
# input dropout 0.2 + auxiliary targets (AKI within 12 h / 24 h, next-48 h creatinine rise)
$T --set out=runs/drop-aux --set model.input_dropout=0.2 \
    --set 'model.aux=["aki12","aki24","creat48"]'
# heavier regularisation: dropout 0.3, input dropout 0.2, weight decay 0.05, weight EMA 0.995
$T --set out=runs/reg --set model.dropout=0.3 --set model.input_dropout=0.2 \
    --set train.weight_decay=0.05 --set train.ema=0.995
# both
$T --set out=runs/reg-aux --set model.dropout=0.3 --set model.input_dropout=0.2 \
    --set train.weight_decay=0.05 --set train.ema=0.995 \
    --set 'model.aux=["aki12","aki24","creat48"]'
# three LSTM 2x64 networks (seeds 0-2), averaged in one step sharing the memory
for s in 0 1 2; do
    $T --set out=runs/h64-seed-$s --set model.hidden=64 --set train.seed=$s
done
PYTHONPATH=models python models/experiments/average.py runs/h64-seed-0/model.pt runs/h64-seed-1/model.pt \
    runs/h64-seed-2/model.pt --out runs/avg-h64x3
# the three 2x128 networks above averaged in one step
PYTHONPATH=models python models/experiments/average.py runs/base/model.pt runs/drop-aux/model.pt \
    runs/reg/model.pt --out runs/avg-mixed3
