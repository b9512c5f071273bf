#!/bin/bash
# first look: one draw of 256 per setting, both seeds side by side (one thread each)
cd /work/main
for S in 0 1; do
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s22/ctd2-seed$S --steps 25 --round-below 0.1 --noise-scale 1.0,1.2 \
      --decode-temperature 0,0.8 --num 256 --sample-seed 0 --threads 1 --out runs/s22/fr1-ctd2-seed$S > runs/s22/fr1-$S.log 2>&1 &
done
wait
