#!/bin/bash
# session 16: N = 24 latents of d = 16 (the same 384 latent numbers as N = 12 x d = 32; 2 tokens per latent, not 4)
cd /work/main
export LDLM_FP32=1  # fp32 features, training and scoring, as the fp32-only EPYC that made the reference
S=$1
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s16/n24-seed$S model.latent_len=24 model.latent_dim=16 train.seed=$S train.threads=1 --quiet
.venv/bin/ldlm frontier --ckpt runs/s16/n24-seed$S --steps 25 --noise-scale 1.0,1.1,1.2 --round-below 0.1 \
  --sample-seed 0,1,2,3 --num 256 --threads 1 --out runs/s16/fr-n24-seed$S
