#!/bin/bash
# session 21: the demo config with the denoiser's blocks started from MiniLM's (model.den_init=lm, width 384, 12 heads)
# against the same shape from random weights (the control), two training seeds, each pair side by side at 1 thread
cd /work/main
for S in 0 1; do
  .venv/bin/ldlm train --config configs/tiny.yaml --out runs/s21/lm-seed$S model.den_width=384 model.den_init=lm \
    train.seed=$S train.threads=1 --quiet > runs/s21/lm-$S.log 2>&1 &
  .venv/bin/ldlm train --config configs/tiny.yaml --out runs/s21/r384-seed$S model.den_width=384 model.den_heads=12 \
    train.seed=$S train.threads=1 --quiet > runs/s21/r384-$S.log 2>&1 &
  wait
  echo "trained seed $S $(date)"
done
export LDLM_FP32=1
for S in 0 1; do for R in lm r384; do
  .venv/bin/ldlm frontier --ckpt runs/s21/$R-seed$S --steps 25 --round-below 0.1 --noise-scale 1.0,1.1,1.2 \
    --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --out runs/s21/fr-$R-seed$S
  echo "scored $R $S $(date)"
done; done
