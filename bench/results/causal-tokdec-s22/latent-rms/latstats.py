"""Diagnostic (session 22): the spread of the sampler's estimates of z0 step by step against the encoded held-out
latents', on the demo config's session-17 checkpoint.  Usage: latstats.py CKPT NOISE_SCALE
(.venv/bin/python bench/results/causal-tokdec-s22/latent-rms/latstats.py runs/s17/bf-seed0 1.2 > out.txt)"""
import sys

import torch
from ldlm.evaluation import build_references
from ldlm.generate import load_model
from ldlm.config import SampleConfig
torch.set_num_threads(2)
model = load_model(sys.argv[1])
ns = float(sys.argv[2])
refs, refs_b, note = build_references("valid", model.cfg, 256, None, 0)
enc = model.tokenizer(refs_b, padding="max_length", truncation=True, max_length=model.cfg.data.seq_len, return_tensors="pt")
with torch.no_grad():
    mask = enc["attention_mask"].bool()
    z = model.encode(model.frozen.features(enc["input_ids"], mask), mask, frozen=True).float()
def stats(z):
    std_c = z.std(dim=(0,)).mean().item()  # per (pos,channel) std over samples
    rms = z.pow(2).mean().sqrt().item()
    meanvec = z.mean(0)
    cen = z - meanvec
    flat = torch.nn.functional.normalize(cen.flatten(1), dim=1)
    cos = (flat @ flat.T); off = cos[~torch.eye(len(z), dtype=bool)].mean().item()
    s = torch.linalg.svdvals(cen.flatten(1)); p = s**2/ (s**2).sum(); erank = torch.exp(-(p*p.clamp_min(1e-12).log()).sum()).item()
    return dict(rms=round(rms,3), std_over_samples=round(std_c,3), mean_norm=round(meanvec.pow(2).mean().sqrt().item(),3), offcos=round(off,3), erank=round(erank,1))
print("data", stats(z))
steps = {}
def cb(i, t, z0): steps.setdefault(i, []).append((t, z0.clone()))
sc = SampleConfig(num=256, steps=25, noise_scale=ns, round_below=0.1, batch_size=256)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    ids = model.generate_ids(256, sc, g, "cpu", callback=cb)
for i in sorted(steps):
    t = steps[i][0][0]; zz = torch.cat([x[1] for x in steps[i]])
    if i % 3 == 0 or i >= 20: print(i, round(t,3), stats(zz))
