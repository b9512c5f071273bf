#!/bin/bash
# session 21, follow-up: does the copied init survive a lower learning rate? lr 1e-3 (half the demo's), seed 0,
# from MiniLM and the random control side by side at one thread each
cd /work/main
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s21/lm-lr1e-3-seed0 model.den_width=384 model.den_init=lm \
  train.lr=1e-3 train.seed=0 train.threads=1 --quiet > runs/s21/lm-lr.log 2>&1 &
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s21/r384-lr1e-3-seed0 model.den_width=384 model.den_heads=12 \
  train.lr=1e-3 train.seed=0 train.threads=1 --quiet > runs/s21/r384-lr.log 2>&1 &
wait
echo "trained $(date)"
