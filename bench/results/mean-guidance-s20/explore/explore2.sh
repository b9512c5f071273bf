set -x
export LDLM_FP32=1
C=runs/s17/bf-seed0
D=runs/s20/x
for spec in "1.0 0.6 0.5 1.01" "1.0 0.6 0.1 0.5" "0.9 0.8 0.1 1.01" "1.1 0.3 0.1 1.01"; do
  set -- $spec
  f=$D/zg-ns$1-g$2-lo$3-hi$4.jsonl
  .venv/bin/python runs/s20/zg.py $C $1 $2 0 $f $3 $4
  bash runs/s20/ev.sh $f
done
