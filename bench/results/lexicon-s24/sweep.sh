#!/bin/bash
# Session 24: the lexicon-constrained readout on the demo config's two training seeds, four draws of 256 per setting
# (one 1-thread job per seed, side by side). Run from the repository root:
#   bash bench/results/lexicon-s24/sweep.sh SEED 1.2 false,true lex     # both readouts at the demo's noise
#   bash bench/results/lexicon-s24/sweep.sh SEED 1.3 true lex13         # the lexicon at more noise
#   bash bench/results/lexicon-s24/sweep.sh SEED 1.1 false plain11      # the plain readout at the lexicon's entropy
# (session 24 ran these three as three scripts of the same lines; the checkpoints are runs/s24/demo-seed$SEED:
# `ldlm train --config configs/tiny.yaml --out runs/s24/demo-seed$SEED train.seed=$SEED train.threads=1 --quiet`)
set -e
S=$1; NOISE=$2; LEX=$3; NAME=$4
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s24/demo-seed$S --steps 25 --round-below 0.1 --noise-scale $NOISE \
  --lexicon $LEX --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s24/$NAME-seed$S
DEST=bench/results/lexicon-s24/seed$S$([ "$NAME" = lex ] || echo "-ns$NOISE")
mkdir -p $DEST
cp runs/s24/$NAME-seed$S/frontier.{json,csv,png} $DEST/
