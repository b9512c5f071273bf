#!/bin/bash
# four draws of 256 at the reference's grid (noise 1.0/1.1/1.2, rounding below 0.1, argmax, 8 passes of the masked
# token decoder), both seeds side by side, one thread each; LDLM_FP32=1 as the session-17 reference
cd /work/main
for S in 0 1; do
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s23/mtd2-seed$S --steps 25 --round-below 0.1 --noise-scale ${NS:-1.2} \
      --decode-iters ${K:-8} --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 \
      --out runs/s23/fr${TAG:-}-mtd2-seed$S > runs/s23/fr${TAG:-}-mtd2-$S.log 2>&1 &
done
wait
