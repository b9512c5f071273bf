#!/bin/bash
# session 17: the demo config trained in bf16 (attention fp32) on the AMX Xeon, scored with the fp32 evaluator
cd /work/main
S=$1
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s17/bf-seed$S train.seed=$S train.threads=1 --quiet
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s17/bf-seed$S --steps 25 --noise-scale 1.0,1.1,1.2 --round-below 0.1 \
  --sample-seed 0,1,2,3 --num 256 --threads 1 --out runs/s17/fr-bf-seed$S
