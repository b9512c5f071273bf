#!/bin/bash
# Session 25: the demo config trained 600 steps instead of 500 (the demo's time slack on this CPU spent on steps),
# both training seeds side by side (one 1-thread job each), four draws of 256 at noise 1.1 and 1.2, scored as the
# 500-step reference of the same machine kind (bench/results/lexicon-s24/: seed*/ plain rows, seed*-ns1.1/).
#   bash bench/results/steps600-s25/run.sh SEED
set -e
S=$1
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s25/steps600-seed$S train.steps=600 train.seed=$S \
  train.threads=1 --quiet
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s25/steps600-seed$S --steps 25 --round-below 0.1 --noise-scale 1.1,1.2 \
  --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s25/fr-steps600-seed$S
DEST=bench/results/steps600-s25/seed$S
mkdir -p $DEST
cp runs/s25/fr-steps600-seed$S/frontier.{json,csv,png} runs/s25/steps600-seed$S/config.json $DEST/
grep '"split": "valid"' runs/s25/steps600-seed$S/metrics.jsonl > $DEST/valid.jsonl || true
