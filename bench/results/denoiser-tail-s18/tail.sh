#!/bin/bash
# session 18: the demo config with a denoiser-only tail (recipe.denoiser_tail), bf16 training, fp32 scoring
# usage: tail.sh NAME SEED override...
cd /work/main
N=$1; S=$2; shift 2
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s18/$N-seed$S train.seed=$S train.threads=1 "$@" --quiet
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s18/$N-seed$S --steps 25 --noise-scale 1.0,1.1,1.2 --round-below 0.1 \
  --sample-seed 0,1,2,3 --num 256 --threads 1 --out runs/s18/fr-$N-seed$S
