#!/bin/bash
# fr-smallc.sh's command, each seed started as soon as its training run has exited
cd /work/main
for S in 0 1; do
  ( while pgrep -f "runs/s23/smallc-seed$S " > /dev/null; do sleep 10; done
    LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s23/smallc-seed$S --steps 25 --round-below 0.1 --noise-scale 1.0 \
      --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 \
      --out runs/s23/fr-smallc-seed$S > runs/s23/fr-smallc-$S.log 2>&1 ) &
done
wait
