#!/bin/bash
# Session 26: the same-budget AR with the same budget split as LDLM's batch-16 run (configs/tiny-ar.yaml at batch 16
# for 1,100 steps, its LR warmup kept at the same number of passages), training seed SEED, at session 25's two
# settings nearest the demo's entropy (T 0.8; T 0.9 with top-p 0.9), four draws of 256 each.
#   bash bench/results/batch16-s26/ar.sh SEED
set -e
S=$1
.venv/bin/ldlm train --config configs/tiny-ar.yaml --out runs/s26/ar-b16-seed$S train.batch_size=16 train.steps=1100 \
  train.lr_warmup=50 train.seed=$S train.threads=1 --quiet
for SET in "0.8 1.0 T0.8" "0.9 0.9 T0.9p0.9"; do
  set -- $SET
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s26/ar-b16-seed$S --temperature $1 --top-p $2 \
    --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s26/fr-ar-b16-$3-seed$S
  mkdir -p bench/results/batch16-s26/ar-$3-seed$S
  cp runs/s26/fr-ar-b16-$3-seed$S/frontier.{json,csv,png} bench/results/batch16-s26/ar-$3-seed$S/
done
cp runs/s26/ar-b16-seed$S/config.json bench/results/batch16-s26/ar-T0.8-seed$S/
grep '"split": "valid"' runs/s26/ar-b16-seed$S/metrics.jsonl > bench/results/batch16-s26/ar-T0.8-seed$S/valid.jsonl
