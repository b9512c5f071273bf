#!/bin/bash
# Session 26: a third training seed (2) for the demo config (configs/tiny.yaml, 600 x 32) and for the same-budget AR
# (configs/tiny-ar.yaml, 600 x 32), sampled and scored exactly as session 25's seeds 0 and 1
# (bench/results/steps600-s25/run.sh and ar.sh): LDLM at noise 1.1 and 1.2, AR at T 0.8 and T 0.9 / top-p 0.9,
# four draws of 256 each.
#   bash bench/results/seed2-s26/run.sh ldlm     # or: ar
set -e
S=2
DEST=bench/results/seed2-s26
if [ "$1" = ldlm ]; then
  .venv/bin/ldlm train --config configs/tiny.yaml --out runs/s26/steps600-seed$S train.seed=$S train.threads=1 --quiet
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s26/steps600-seed$S --steps 25 --round-below 0.1 \
    --noise-scale 1.1,1.2 --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s26/fr-steps600-seed$S
  mkdir -p $DEST/ldlm
  cp runs/s26/fr-steps600-seed$S/frontier.{json,csv,png} runs/s26/steps600-seed$S/config.json $DEST/ldlm/
  grep '"split": "valid"' runs/s26/steps600-seed$S/metrics.jsonl > $DEST/ldlm/valid.jsonl || true
else
  .venv/bin/ldlm train --config configs/tiny-ar.yaml --out runs/s26/ar600-seed$S train.seed=$S train.threads=1 --quiet
  for SET in "0.8 1.0 T0.8" "0.9 0.9 T0.9p0.9"; do
    set -- $SET
    LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s26/ar600-seed$S --temperature $1 --top-p $2 \
      --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s26/fr-ar600-$3-seed$S
    mkdir -p $DEST/ar-$3
    cp runs/s26/fr-ar600-$3-seed$S/frontier.{json,csv,png} $DEST/ar-$3/
  done
  cp runs/s26/ar600-seed$S/config.json $DEST/ar-T0.8/
  grep '"split": "valid"' runs/s26/ar600-seed$S/metrics.jsonl > $DEST/ar-T0.8/valid.jsonl
fi
