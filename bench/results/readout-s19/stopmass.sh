#!/bin/bash
# the end mass alone (no contrast) at the demo's noise scales, both bf16 training seeds, 4 sampling seeds each
# (as run, it first waited for contrast.sh to finish: one sweep at a time on the 2 cores)
for s in 0 1; do
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s17/bf-seed$s --steps 25 --round-below 0.1 --noise-scale 1.1,1.2 \
    --stop-mass 0.5 --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --out runs/s19/fr-stopmass-seed$s
done
