"""Experiment: guidance away from the mean latent -- each step's estimate z0 becomes z0 + g * (z0 - 0) = (1 + g) z0
(0 = the normalised latents' centre, the latent the PMI readout contrasts with), on steps whose time is in [lo, hi].
Usage: zg.py CKPT NOISE G SEED OUT.jsonl [LO HI]"""
import sys, torch
import ldlm.algorithms.ldlm as L
from ldlm.generate import load_model, generate, write_samples
ckpt, ns, g, seed, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lo, hi = (float(sys.argv[6]), float(sys.argv[7])) if len(sys.argv) > 7 else (0.0, 1.01)
orig = L.reverse_diffusion
def patched(den, *a, **k):
    def wrapped(z, t, z_sc=None):
        z0 = den(z, t, z_sc).float()
        tt = float(t.max())
        return z0 * (1 + g) if lo <= tt < hi else z0
    return orig(wrapped, *a, **k)
L.reverse_diffusion = patched
m = load_model(ckpt, device="cpu")
write_samples(generate(m, num=256, noise_scale=ns, seed=seed), out)
