#!/bin/bash
# AR's training seed 0 on this machine (session 16 trained seed 1 here; seed 0 was trained on the EPYC), then its
# two settings of sessions 14/16 at four sampling seeds, scored like session 18's prefix sweep (bf16 evaluator, first-20-words MAUVE)
set -e
LDLM_FP32=1 .venv/bin/ldlm train --config configs/tiny-ar.yaml --out runs/s19/ar-seed0 train.seed=0 train.threads=1 --quiet
# (as run, it waited here for the CI run on the cores to finish)
.venv/bin/ldlm frontier --ckpt runs/s19/ar-seed0 --temperature 0.8 --top-p 1.0 --sample-seed 0,1,2,3 \
    --num 256 --mauve-prefix-words 20 --out runs/s19/fr-ar-seed0-T0.8-p1.0
.venv/bin/ldlm frontier --ckpt runs/s19/ar-seed0 --temperature 0.9 --top-p 0.9 --sample-seed 0,1,2,3 \
    --num 256 --mauve-prefix-words 20 --out runs/s19/fr-ar-seed0-T0.9-p0.9
