#!/bin/bash
# Session 24: the same-budget AR (configs/tiny-ar.yaml, 500 steps x 32) at training seed SEED, sampled with and
# without the lexicon at session 14's setting nearest the demo's entropy (T 0.9, top-p 0.9), four draws of 256.
# Run from the repository root: bash bench/results/lexicon-s24/ar.sh SEED
set -e
S=$1
[ -f runs/s24/ar-seed$S/latest ] || .venv/bin/ldlm train --config configs/tiny-ar.yaml --out runs/s24/ar-seed$S \
  train.seed=$S train.threads=1 --quiet
LDLM_FP32=1 .venv/bin/ldlm frontier --ckpt runs/s24/ar-seed$S --temperature 0.9 --top-p 0.9 --lexicon false,true \
  --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --threads 1 --out runs/s24/ar-lex-seed$S
mkdir -p bench/results/lexicon-s24/ar-seed$S
cp runs/s24/ar-lex-seed$S/frontier.{json,csv,png} bench/results/lexicon-s24/ar-seed$S/
grep '"split": "valid"' runs/s24/ar-seed$S/metrics.jsonl > bench/results/lexicon-s24/ar-seed$S/valid.jsonl
