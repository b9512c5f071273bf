#!/bin/bash
# the readout knobs on the demo config's two bf16 training seeds (session 17), 4 sampling seeds each
for s in 0 1; do
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s17/bf-seed$s --steps 25 --round-below 0.1 --noise-scale 1.0,1.1 \
    --readout-contrast 0.15,0.3 --stop-mass 0.5 --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 \
    --out runs/s19/fr-readout-seed$s
done
