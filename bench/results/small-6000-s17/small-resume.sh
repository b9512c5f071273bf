#!/bin/bash
# session 17: continue configs/small.yaml at 6000 steps (stopped at step 74 by mistake), then its four-draw sweep
cd /work/main
N=6000
XDG_CACHE_HOME=$(ls -d /tmp/xdg-small.* | head -1) .venv/bin/ldlm train --config configs/small.yaml --out runs/s17/small-$N --resume train.steps=$N train.threads=2 --quiet
.venv/bin/ldlm frontier --ckpt runs/s17/small-$N --steps 25 --noise-scale 1.0 --round-below 0.1 \
  --sample-seed 0,1,2,3 --num 256 --threads 2 --out runs/s17/fr-small-$N
