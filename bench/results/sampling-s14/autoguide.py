"""Experiment: autoguidance (Karras et al. 2024) with an earlier checkpoint's denoiser as the 'bad' model:
z0 = bad + w (good - bad). Everything else (encoder, decoder, rounding) from the good checkpoint."""
import json, sys
import torch
from torch import nn
from ldlm.generate import load_model, generate
from ldlm.evaluation import build_references, make_evaluation

torch.set_num_threads(1)
good_ckpt, bad_ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
settings = [tuple(map(float, s.split(":"))) for s in sys.argv[4].split(",")]  # w:noise
seeds = [int(x) for x in sys.argv[5].split(",")]


class Guided(nn.Module):
    def __init__(self, good, bad):
        super().__init__()
        self.good, self.bad, self.w = good, bad, 1.0

    def forward(self, z, t, z_sc=None, given=None):
        g = self.good(z, t, z_sc, given).float()
        if self.w == 1.0:
            return g
        b = self.bad(z, t, z_sc, given).float()
        return b + self.w * (g - b)


model = load_model(good_ckpt)
bad = load_model(bad_ckpt)
guided = Guided(model.denoiser, bad.denoiser)
model.denoiser = guided
refs, refs_b, note = build_references("valid", model.cfg, 256, None, 0)
ev = make_evaluation(None, refs, None, note, threads=1)
res = []
for w, ns in settings:
    for seed in seeds:
        guided.w = w
        recs = generate(model, num=256, steps=25, seed=seed, noise_scale=ns, round_below=0.1)
        row = ev.evaluate([r["text"] for r in recs])
        r = {"w": w, "noise_scale": ns, "seed": seed, "good": good_ckpt, "bad": bad_ckpt,
             **{k: row.get(k) for k in ("gen_ppl", "entropy", "mauve", "mean_tokens", "distinct2_set")}}
        print(json.dumps(r), flush=True)
        res.append(r)
        json.dump(res, open(out, "w"), indent=1)
