#!/bin/bash
# Session 25: the hybrid demo config (configs/tiny-causal.yaml) reading the frozen LM's third-to-last layer
# (model.lm_layer=-3, the paper's choice; its feature pass runs 4 of MiniLM's 6 blocks), both training seeds side by
# side (one 1-thread job each), four draws of 256 at noise 1.1 and 1.2, scored as session 22's hybrid
# (bench/results/causal-tokdec-s22/ctd2-seed*/, the last layer; another machine kind, so both are retrained here:
# the last layer's runs are the `ref` lines below).
#   bash bench/results/causal-layer3-s25/run.sh SEED LAYER NAME     # LAYER -3 (NAME l3) or -1 (NAME l1)
set -e
S=$1; LAYER=$2; NAME=$3
.venv/bin/ldlm train --config configs/tiny-causal.yaml --out runs/s25/causal-$NAME-seed$S model.lm_layer=$LAYER \
  train.seed=$S train.threads=1 --quiet
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s25/causal-$NAME-seed$S --steps 25 --round-below 0.1 --noise-scale 1.1,1.2 \
  --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s25/fr-causal-$NAME-seed$S
DEST=bench/results/causal-layer3-s25/$NAME-seed$S
mkdir -p $DEST
cp runs/s25/fr-causal-$NAME-seed$S/frontier.{json,csv,png} runs/s25/causal-$NAME-seed$S/config.json $DEST/
grep '"split": "valid"' runs/s25/causal-$NAME-seed$S/metrics.jsonl > $DEST/valid.jsonl || true
