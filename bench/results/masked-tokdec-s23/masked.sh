#!/bin/bash
# the masked token decoder at the demo config, both training seeds side by side, one thread each
cd /work/main
for S in 0 1; do
  .venv/bin/ldlm train --config configs/tiny.yaml --out runs/s23/mtd2-seed$S model.tok_dec_layers=2 \
      model.tok_dec_masked=true train.seed=$S train.threads=1 --quiet > runs/s23/mtd2-$S.log 2>&1 &
done
wait
