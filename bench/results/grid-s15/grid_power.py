"""Experiment: time grids that put more of the 25 steps near t = 0, where the SDEdit diagnostic
(bench/results/sdedit-s15/) sees the samples lose entropy. The grid t_i = u_i^p, u uniform from 1 to 0
(p = 1 is the uniform grid; p = 2 ends ... 0.0064, 0.0016, 0). Each grid is installed as sample.grid=uniform for
the run of this script only. Usage: grid_power.py CKPT OUT.json p,... noise,... round_below seed,..."""
import json
import sys

import torch

import ldlm.sampling as S
from ldlm.evaluation import build_references, make_evaluation
from ldlm.generate import generate, load_model

KEEP = ("gen_ppl", "entropy", "mauve", "mean_words", "distinct2_set")
ckpt, out = sys.argv[1], sys.argv[2]
powers, noises = ([float(x) for x in sys.argv[i].split(",")] for i in (3, 4))
rb, seeds = float(sys.argv[5]), [int(x) for x in sys.argv[6].split(",")]
torch.set_num_threads(2)
model = load_model(ckpt)
refs, _, note = build_references("valid", model.cfg, 256, None, 0)
ev = make_evaluation(None, refs, None, note, threads=2)
res = []
for p in powers:
    S.GRIDS["uniform"] = lambda schedule, steps, p=p: torch.linspace(1.0, 0.0, steps + 1) ** p
    for ns in noises:
        for seed in seeds:
            recs = generate(model, num=256, steps=25, seed=seed, noise_scale=ns, round_below=rb)
            row = ev.evaluate([r["text"] for r in recs])
            r = {"power": p, "noise_scale": ns, "round_below": rb, "seed": seed, **{k: row.get(k) for k in KEEP},
                 "ckpt": ckpt}
            print(json.dumps(r), flush=True)
            res.append(r)
            with open(out, "w") as f:
                json.dump(res, f, indent=1)
