#!/bin/sh
# The distillation rows of models/README.md (issue 3), run from the repo root one at a time on one
# core (OMP_NUM_THREADS=1 taskset -c 1 ...): the teacher, alpha 0.5 / 0.8 / 1.0, a second seed,
# and averages. The default artifact is the alpha 0.8 run: models/configs/aki-lstm-distill.json.
set -e
python -m riskstream_models.distill --out runs/teacher/oof.npz --folds 5 --threads 1
T="python -m riskstream_models.train --config models/configs/aki-lstm.json --set export=null"
for a in 0.5 0.8 1.0; do
    $T --set out=runs/distill-$a --set train.distill=$a
done
$T --set out=runs/distill-0.8-no-memory --set train.distill=0.8 --set model.memory=false
$T --set out=runs/distill-0.8-seed-1 --set train.distill=0.8 --set train.seed=1
A="PYTHONPATH=models python models/experiments/average.py"
$A runs/distill-0.5/model.pt runs/distill-0.8/model.pt runs/distill-1.0/model.pt --out runs/avg-distill3
$A runs/distill-0.8/model.pt runs/distill-1.0/model.pt --out runs/avg-distill2
$A runs/distill-0.8/model.pt runs/distill-0.8-seed-1/model.pt --out runs/avg-distill-0.8x2
