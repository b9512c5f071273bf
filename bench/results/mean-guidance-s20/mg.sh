# four-draw sweeps of sample.mean_guidance on the demo config's two session-17 checkpoints (LDLM_FP32 like the reference)
export LDLM_FP32=1
for s in 0 1; do
  .venv/bin/ldlm frontier --ckpt runs/s17/bf-seed$s --steps 25 --round-below 0.1 --noise-scale 1.0 \
    --mean-guidance 0.3,0.6 --num 256 --sample-seed 0,1,2,3 --mauve-prefix-words 20 --out runs/s20/fr-mg-seed$s
done
