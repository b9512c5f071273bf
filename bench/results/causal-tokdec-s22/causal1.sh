#!/bin/bash
# one causal block instead of two (a cheaper step), both training seeds side by side, one thread each
cd /work/main
for S in 0 1; do
  .venv/bin/ldlm train --config configs/tiny.yaml --out runs/s22/ctd1-seed$S model.tok_dec_layers=1 \
      model.tok_dec_causal=true train.seed=$S train.threads=1 --quiet > runs/s22/ctd1-$S.log 2>&1 &
done
wait
