#!/bin/bash
# session 21 (lminit2.sh stopped during the first sweep, to save time): the other three runs at the demo's noise 1.2 only
cd /work/main
while pgrep -f "ldlm frontier --ckpt runs/s21/lm-seed0" >/dev/null; do sleep 10; done
echo "scored lm 0 $(date)"
export LDLM_FP32=1
for RS in r384-seed0 lm-seed1 r384-seed1; do
  .venv/bin/ldlm frontier --ckpt runs/s21/$RS --steps 25 --round-below 0.1 --noise-scale 1.2 \
    --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --out runs/s21/fr-$RS
  echo "scored $RS $(date)"
done
