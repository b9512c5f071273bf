#!/bin/bash
# session 20: the demo config with the paper's separate token decoder (2 transformer blocks between h_hat and the readout)
cd /work/main
while pgrep -f runs/s20/mg.sh >/dev/null; do sleep 20; done
for S in 0 1; do
  .venv/bin/ldlm train --config configs/tiny.yaml --out runs/s20/td2-seed$S model.tok_dec_layers=2 train.seed=$S \
    train.threads=1 --quiet > runs/s20/td2-$S.log 2>&1 &
done
wait
echo trained
