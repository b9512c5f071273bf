#!/bin/bash
# session 16: model.prediction=v at the demo config, two training seeds, then the reference sweep
cd /work/main
export LDLM_FP32=1  # fp32 features, training and scoring, as the fp32-only EPYC that made the reference
S=$1
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s16/v-seed$S model.prediction=v train.seed=$S train.threads=1 --quiet
.venv/bin/ldlm frontier --ckpt runs/s16/v-seed$S --steps 25 --noise-scale 1.0,1.1,1.2 --round-below 0.1 \
  --sample-seed 0,1,2,3 --num 256 --threads 1 --out runs/s16/fr-v-seed$S
