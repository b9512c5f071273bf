# four-draw sweeps of the token-decoder runs at the demo's sampling (LDLM_FP32 like the s17 reference)
export LDLM_FP32=1
for s in 0 1; do
  .venv/bin/ldlm frontier --ckpt runs/s20/td2-seed$s --steps 25 --round-below 0.1 --noise-scale 1.0,1.1,1.2 \
    --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --out runs/s20/fr-td2-seed$s
done
