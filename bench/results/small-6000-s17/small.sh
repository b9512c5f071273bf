#!/bin/bash
# session 17: configs/small.yaml with more steps in its 60 minutes (bf16 + fp32 attention), timed alone from an empty cache
cd /work/main
N=$1
C=$(mktemp -d /tmp/xdg-small.XXXX)
T0=$(date +%s); S0=$(date -u +%FT%TZ)
XDG_CACHE_HOME=$C .venv/bin/ldlm train --config configs/small.yaml --out runs/s17/small-$N train.steps=$N train.threads=2 --quiet
RC=$?; T1=$(date +%s)
echo "{\"command\": \"XDG_CACHE_HOME=<empty> ldlm train --config configs/small.yaml --out runs/s17/small-$N train.steps=$N train.threads=2 --quiet\", \"rc\": $RC, \"wall_s\": $((T1-T0)), \"start\": \"$S0\", \"end\": \"$(date -u +%FT%TZ)\"}" > runs/s17/small-$N-timing.json
.venv/bin/ldlm frontier --ckpt runs/s17/small-$N --steps 25 --noise-scale 1.0 --round-below 0.1 \
  --sample-seed 0,1,2,3 --num 256 --threads 2 --out runs/s17/fr-small-$N
