"""Experiment: sampling without self-conditioning (the model was trained with it half the time)."""
import json, sys, functools
import torch
import ldlm.algorithms.ldlm as L
from ldlm.generate import load_model, generate
from ldlm.evaluation import build_references, make_evaluation

torch.set_num_threads(1)
ckpt, out = sys.argv[1], sys.argv[2]
settings = [float(x) for x in sys.argv[3].split(",")]
seeds = [int(x) for x in sys.argv[4].split(",")]
L.reverse_diffusion = functools.partial(L.reverse_diffusion, self_condition=False)
model = load_model(ckpt)
refs, _, note = build_references("valid", model.cfg, 256, None, 0)
ev = make_evaluation(None, refs, None, note, threads=1)
res = []
for ns in settings:
    for seed in seeds:
        recs = generate(model, num=256, steps=25, seed=seed, noise_scale=ns, round_below=0.1)
        row = ev.evaluate([r["text"] for r in recs])
        r = {"self_condition": False, "noise_scale": ns, "seed": seed, "ckpt": ckpt,
             **{k: row.get(k) for k in ("gen_ppl", "entropy", "mauve", "mean_tokens", "distinct2_set")}}
        print(json.dumps(r), flush=True)
        res.append(r)
        json.dump(res, open(out, "w"), indent=1)
