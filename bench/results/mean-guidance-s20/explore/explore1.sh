set -x
export LDLM_FP32=1
C=runs/s17/bf-seed0
D=runs/s20/x
mkdir -p $D
for spec in "0 0.1 1.01" "0.15 0.1 1.01" "0.3 0.1 1.01" "0.3 0 1.01" "0.6 0.1 1.01"; do
  set -- $spec
  f=$D/zg-ns1.0-g$1-lo$2.jsonl
  .venv/bin/python runs/s20/zg.py $C 1.0 $1 0 $f $2 $3
  bash runs/s20/ev.sh $f
done
