#!/bin/sh
# The opt-in artifact models/aki-lstm/1.1.0: three LSTM 2x128 networks with the feature memory,
# trained with three recipes on the same split, averaged in one ONNX step that shares one memory
# `m` (h, c [2, 384]); run from the repo root. ~25 min training on one core (OMP_NUM_THREADS=1).
set -e
T="python -m riskstream_models.train"
$T --config models/configs/aki-lstm.json --set export=null --set out=runs/base  # = 1.0.0's net
$T --config models/configs/aki-lstm-drop-aux.json  # input dropout + auxiliary targets
$T --config models/configs/aki-lstm-reg.json       # dropout 0.3, weight decay 0.05, weight EMA
PYTHONPATH=models python models/experiments/average.py runs/base/model.pt runs/drop-aux/model.pt \
    runs/reg/model.pt --out runs/avg-mixed3
python -m riskstream_models.checkpoint --checkpoint runs/avg-mixed3/model.pt \
    --out models/aki-lstm/1.1.0 --name aki-lstm --version 1.1.0
