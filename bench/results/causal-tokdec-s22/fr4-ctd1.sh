#!/bin/bash
# one causal block: four draws of 256 at the demo's noise 1.2 (argmax readout, rounding below 0.1), both seeds side
# by side, one thread each; LDLM_FP32=1 as the session-17 reference
cd /work/main
for S in 0 1; do
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s22/ctd1-seed$S --steps 25 --round-below 0.1 --noise-scale 1.2 \
      --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s22/fr4-ctd1-seed$S > runs/s22/fr4-ctd1-$S.log 2>&1 &
done
wait
