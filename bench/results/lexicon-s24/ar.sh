#!/bin/bash
# Session 24: the same-budget AR (configs/tiny-ar.yaml, 500 steps x 32) at training seed SEED, sampled with and
# without the lexicon at session 14's two settings nearest the demo's entropy, four draws of 256 each.
# Run from the repository root: bash bench/results/lexicon-s24/ar.sh SEED
set -e
S=$1
[ -f runs/s24/ar-seed$S/latest ] || .venv/bin/ldlm train --config configs/tiny-ar.yaml --out runs/s24/ar-seed$S \
  train.seed=$S train.threads=1 --quiet
for TP in "0.8 1.0" "0.9 0.9"; do
  set -- $TP
  LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s24/ar-seed$S --temperature $1 --top-p $2 --lexicon false,true \
    --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s24/ar-lex-seed$S-T$1-p$2
  mkdir -p bench/results/lexicon-s24/ar-seed$S-T$1-p$2
  cp runs/s24/ar-lex-seed$S-T$1-p$2/frontier.{json,csv,png} bench/results/lexicon-s24/ar-seed$S-T$1-p$2/
done
