#!/bin/sh
# The comparison rows of models/README.md, one command each (run from the repo root, one at a time).
set -e
T="python -m riskstream_models.train --config models/configs/aki-lstm.json --set export=null"
$T --set out=runs/no-memory --set model.memory=false
$T --set out=runs/gru --set model.cell=gru
$T --set out=runs/sru --set model.cell=sru
$T --set out=runs/no-highway --set model.highway=false
$T --set out=runs/layers-1 --set model.layers=1
$T --set out=runs/layers-3 --set model.layers=3
