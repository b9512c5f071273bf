#!/bin/bash
# session 21, continued (lminit.sh stopped after starting seed 0's pair): seed 1's pair, then four draws of 256 at
# the demo's noise 1.2 (and 1.0) for all four runs
cd /work/main
while pgrep -f "out runs/s21/(lm|r384)-seed0" >/dev/null; do sleep 10; done
echo "seed 0 trained $(date)"
S=1
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s21/lm-seed$S model.den_width=384 model.den_init=lm \
  train.seed=$S train.threads=1 --quiet > runs/s21/lm-$S.log 2>&1 &
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s21/r384-seed$S model.den_width=384 model.den_heads=12 \
  train.seed=$S train.threads=1 --quiet > runs/s21/r384-$S.log 2>&1 &
wait
echo "seed 1 trained $(date)"
export LDLM_FP32=1
for S in 0 1; do for R in lm r384; do
  .venv/bin/ldlm frontier --ckpt runs/s21/$R-seed$S --steps 25 --round-below 0.1 --noise-scale 1.0,1.2 \
    --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --out runs/s21/fr-$R-seed$S
  echo "scored $R $S $(date)"
done; done
