#!/bin/bash
# Session 25: the same-budget AR at the demo's new budget (configs/tiny-ar.yaml with 600 steps x 32), training seed
# SEED, at session 14's two settings nearest the demo's entropy (T 0.8; T 0.9 with top-p 0.9), four draws of 256
# each -- two settings, as LDLM's two noise scales. Run from the repository root: bash bench/results/steps600-s25/ar.sh SEED
set -e
S=$1
.venv/bin/ldlm train --config configs/tiny-ar.yaml --out runs/s25/ar600-seed$S train.steps=600 train.seed=$S \
  train.threads=1 --quiet
for SET in "0.8 1.0 T0.8" "0.9 0.9 T0.9p0.9"; do
  set -- $SET
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s25/ar600-seed$S --temperature $1 --top-p $2 \
    --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s25/fr-ar600-$3-seed$S
  mkdir -p bench/results/steps600-s25/ar-$3-seed$S
  cp runs/s25/fr-ar600-$3-seed$S/frontier.{json,csv,png} bench/results/steps600-s25/ar-$3-seed$S/
done
cp runs/s25/ar600-seed$S/config.json bench/results/steps600-s25/ar-T0.8-seed$S/
grep '"split": "valid"' runs/s25/ar600-seed$S/metrics.jsonl > bench/results/steps600-s25/ar-T0.8-seed$S/valid.jsonl
