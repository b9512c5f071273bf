#!/bin/bash
# ev.sh FILE...: ldlm eval each (fp32 evaluator like the frontier files), print a one-line summary
for f in "$@"; do
  LDLM_FP32=1 .venv/bin/ldlm eval "$f" --out "${f%.jsonl}.eval.json" --mauve-prefix-words 20 >/dev/null 2>&1

done
python3 runs/s20/summ.py "${@/%.jsonl/.eval.json}"
