"""Diagnostic (session 19): the readout at the end of sampled passages -- each position's argmax token with the
probability [SEP]+[PAD] hold there, for the first rows, and the mean end mass at the first end token and one after.
Usage: end_mass.py CKPT NOISE_SCALE  (256 samples, the checkpoint's sampling settings, seed 0)"""
import sys, torch
from ldlm.generate import load_model, sample_settings
from ldlm.algorithms.ldlm import RoundedDenoiser
from ldlm.sampling import reverse_diffusion
m = load_model(sys.argv[1], device="cpu"); tok = m.tokenizer
sc = sample_settings(m, num=256, noise_scale=float(sys.argv[2]), seed=0)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    den = RoundedDenoiser(m, m.denoiser, sc.round_below, None, 0.0, g)
    z0 = reverse_diffusion(den, m.schedule, (256, *m.latent_shape()), sc.steps, sc.solver, sc.noise_scale, g, torch.device("cpu"), grid=sc.grid)
    logits = m.token_logits(m.decoder(z0).float())
stop = m.readout.to_local(torch.tensor([tok.sep_token_id, tok.pad_token_id]))
p = torch.softmax(logits, -1); ps = p[..., stop].sum(-1)
ids = m.readout.to_global(logits.argmax(-1))
for r in range(6):
    print(" ".join(f"{tok.convert_ids_to_tokens(int(i))}:{float(q):.2f}" for i, q in zip(ids[r], ps[r]) ))
    print()
# distribution of max prob of non-stop at positions
first = [next((i for i in range(1, 48) if int(ids[r, i]) in (tok.sep_token_id, tok.pad_token_id)), 48) for r in range(256)]
print("mean p_stop at first stop", sum(float(ps[r, f]) for r, f in enumerate(first) if f < 48) / sum(f < 48 for f in first))
print("mean p_stop 1 after first stop", sum(float(ps[r, f+1]) for r, f in enumerate(first) if f < 47) / sum(f < 47 for f in first))
print("mean max word prob", float(p.max(-1).values.mean()))
