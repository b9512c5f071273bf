"""Diagnostic: where along t does the sampler lose the data's distribution? SDEdit from held-out latents.

The 256 held-out passages of set B (the data row's second set, disjoint from the 256 references of set A) are
encoded, noised to time t0 (z = alpha z0 + sigma eps) and the demo's sampler (25-step uniform grid, SDE, rounding
below 0.1) runs from the first grid time <= t0 down to 0; the texts are scored against set A with `ldlm eval`'s
protocol. t0 = 0 is the autoencoder alone on set B (decode(encode(x))); t0 = 1 is plain sampling.
If MAUVE stays near the autoencoder's up to some t0 and falls after it, the denoiser loses the distribution at the
noise levels above that t0.  Usage: sdedit.py CKPT OUT.json t0,... noise,... seed,..."""
import json
import sys

import torch

import ldlm.algorithms.ldlm as L
from ldlm.evaluation import build_references, make_evaluation
from ldlm.generate import generate, load_model
from ldlm.sampling import SOLVERS, time_grid

KEEP = ("gen_ppl", "entropy", "mauve", "mean_words", "distinct2_set")
ckpt, out = sys.argv[1], sys.argv[2]
t0s, noises = ([float(x) for x in sys.argv[i].split(",")] for i in (3, 4))
seeds = [int(x) for x in sys.argv[5].split(",")]
torch.set_num_threads(2)
model = load_model(ckpt)
refs, refs_b, note = build_references("valid", model.cfg, 256, None, 0)
ev = make_evaluation(None, refs, None, note, threads=2)
enc = model.tokenizer(refs_b, padding="max_length", truncation=True, max_length=model.cfg.data.seq_len,
                      return_tensors="pt")
with torch.no_grad():
    mask = enc["attention_mask"].bool()
    z_src = model.encode(model.frozen.features(enc["input_ids"], mask), mask, frozen=True).float()
T0, NEXT = 1.0, 0  # the start time, and the first held-out row the next sampling batch starts from


def from_t0(denoiser, schedule, shape, steps, solver="sde", noise_scale=1.0, generator=None, device="cpu",
            self_condition=True, grid="uniform", callback=None, return_state=False):
    """reverse_diffusion (src/ldlm/sampling.py) started from the held-out latents noised to the first grid time
    <= T0, instead of from pure noise at t = 1. `generate` samples in batches: each takes the next rows of z_src."""
    global NEXT
    src, NEXT = z_src[NEXT: NEXT + shape[0]], NEXT + shape[0]
    ts = time_grid(schedule, steps, grid)
    i0 = int((ts > T0 + 1e-9).sum())
    if i0 >= steps:
        return src.clone()
    t = ts[i0].expand(shape[0])
    z = schedule.alpha(t)[:, None, None] * src + schedule.sigma(t)[:, None, None] * torch.randn(
        shape, generator=generator)
    z0_hat = None
    for i in range(i0, steps):
        t, s = ts[i].expand(shape[0]), ts[i + 1].expand(shape[0])
        z0_hat = denoiser(z, t, z0_hat if self_condition else None).float()
        a_t, s_t = schedule.alpha(t)[:, None, None], schedule.sigma(t)[:, None, None]
        a_s, s_s = schedule.alpha(s)[:, None, None], schedule.sigma(s)[:, None, None]
        eps_hat = (z - a_t * z0_hat) / s_t.clamp_min(1e-8)
        std = SOLVERS[solver] * (s_s / s_t.clamp_min(1e-8)) * (1 - (a_t / a_s.clamp_min(1e-8)) ** 2).clamp_min(0).sqrt()
        z = a_s * z0_hat + (s_s ** 2 - std ** 2).clamp_min(0).sqrt() * eps_hat + noise_scale * std * torch.randn(
            shape, generator=generator)
    return z0_hat


L.reverse_diffusion = from_t0
res = []
for t0 in t0s:
    for ns in noises:
        for seed in seeds:
            T0, NEXT = t0, 0
            recs = generate(model, num=256, steps=25, seed=seed, noise_scale=ns, round_below=0.1)
            row = ev.evaluate([r["text"] for r in recs])
            r = {"t0": t0, "noise_scale": ns, "seed": seed, **{k: row.get(k) for k in KEEP}, "ckpt": ckpt}
            print(json.dumps(r), flush=True)
            res.append(r)
            with open(out, "w") as f:
                json.dump(res, f, indent=1)
