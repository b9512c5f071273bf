#!/bin/bash
# session 16: a second training seed of the same-budget AR, swept at session 14's two points with four draws each
cd /work/main
export LDLM_FP32=1  # fp32 features, training and scoring, as on the EPYC that made AR seed 0's sweep
.venv/bin/ldlm train --config configs/tiny-ar.yaml --out runs/s16/ar-seed1 train.seed=1 train.threads=1 --quiet
for TP in "0.8 1.0" "0.9 0.9"; do set -- $TP
  .venv/bin/ldlm frontier --ckpt runs/s16/ar-seed1 --temperature $1 --top-p $2 --sample-seed 0,1,2,3 --num 256 \
    --threads 1 --out runs/s16/fr-ar-seed1-T$1-p$2
done
