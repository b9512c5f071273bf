#!/bin/bash
# configs/small.yaml with the causal token decoder (as tiny-causal.yaml adds to tiny.yaml), both training seeds side
# by side, one thread each
cd /work/main
for S in 0 1; do
  .venv/bin/ldlm train --config configs/small.yaml --out runs/s23/smallc-seed$S model.tok_dec_layers=2 \
      model.tok_dec_causal=true train.seed=$S train.threads=1 --quiet > runs/s23/smallc-$S.log 2>&1 &
done
wait
