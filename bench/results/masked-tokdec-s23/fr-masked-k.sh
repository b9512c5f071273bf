#!/bin/bash
# the masked token decoder's passes: 1 (its all-[MASK] first pass alone, a parallel readout) and 16, seed 0, one draw
cd /work/main
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s23/mtd2-seed0 --steps 25 --round-below 0.1 --noise-scale 1.2 \
    --decode-iters 1,16 --num 256 --sample-seed 0 --mauve-prefix-words 20 --threads 1 \
    --out runs/s23/frk-mtd2-seed0 > runs/s23/frk-mtd2-0.log 2>&1
