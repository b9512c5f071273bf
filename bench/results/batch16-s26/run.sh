#!/bin/bash
# Session 26: the demo's budget split differently -- batch 16 for 1,100 steps instead of 32 for 600 (17,600 passages
# seen against 19,200; about the same loop time on this CPU, where batch 16 runs at 0.80-0.88x batch 32's tokens/s),
# the LR warmup kept at the same number of passages (50 steps), everything else as configs/tiny.yaml. Both training
# seeds side by side (one 1-thread job each), four draws of 256 at noise 1.0 and 1.1, scored as session 25's
# 600 x 32 reference (bench/results/steps600-s25/).
#   bash bench/results/batch16-s26/run.sh SEED
set -e
S=$1
.venv/bin/ldlm train --config configs/tiny.yaml --out runs/s26/b16-seed$S train.batch_size=16 train.steps=1100 \
  train.lr_warmup=50 train.eval_every=550 train.seed=$S train.threads=1 --quiet
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s26/b16-seed$S --steps 25 --round-below 0.1 --noise-scale 1.0,1.1 \
  --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s26/fr-b16-seed$S
DEST=bench/results/batch16-s26/seed$S
mkdir -p $DEST
cp runs/s26/fr-b16-seed$S/frontier.{json,csv,png} runs/s26/b16-seed$S/config.json $DEST/
grep '"split": "valid"' runs/s26/b16-seed$S/metrics.jsonl > $DEST/valid.jsonl || true
# added after the first two points (batch 16 samples lower entropy at the same noise scale): noise 1.2, same draws
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s26/b16-seed$S --steps 25 --round-below 0.1 --noise-scale 1.2 \
  --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s26/fr-b16-ns1.2-seed$S
mkdir -p $DEST-ns1.2
cp runs/s26/fr-b16-ns1.2-seed$S/frontier.{json,csv,png} $DEST-ns1.2/
