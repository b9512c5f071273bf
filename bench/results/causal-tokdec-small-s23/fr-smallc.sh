#!/bin/bash
# small + the causal token decoder: four draws of 256 at small's sampling settings (noise 1.0, rounding below 0.1,
# argmax), both seeds side by side, one thread each; LDLM_FP32=1 as the fp32 references of sessions 12-13
cd /work/main
for S in 0 1; do
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s23/smallc-seed$S --steps 25 --round-below 0.1 --noise-scale ${NS:-1.0} \
      --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 \
      --out runs/s23/fr${TAG:-}-smallc-seed$S > runs/s23/fr${TAG:-}-smallc-$S.log 2>&1 &
done
wait
