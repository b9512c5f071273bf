"""Diagnostic: spread of sampled latents (25 steps, SDE, sampling seed 0) vs the encoder's latents of 256 held-out
passages. Usage: latent_stats.py RUN_FOLDER"""
import sys, torch
from ldlm.algorithms.ldlm import RoundedDenoiser
from ldlm.generate import load_model
from ldlm.evaluation import validation_passages
from ldlm.sampling import reverse_diffusion
torch.set_num_threads(1)
model = load_model(sys.argv[1])
cfg = model.cfg
texts = validation_passages(cfg)[:256]
enc = model.tokenizer(texts, padding="max_length", truncation=True, max_length=cfg.data.seq_len, return_tensors="pt")
ids, mask = enc["input_ids"], enc["attention_mask"].bool()
with torch.no_grad():
    z_data = model.encode(model.frozen.features(ids, mask), mask, frozen=True)
def stats(z, name):
    zf = z.flatten(1)
    c = zf - zf.mean(0)
    sv = torch.linalg.svdvals(c); p = sv / sv.sum(); erank = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
    d = torch.cdist(zf, zf); pd = d[~torch.eye(len(zf), dtype=bool)].mean()
    print(f"{name:28s} per-dim std {z.std(0).mean():.3f}  norm/seq {zf.norm(dim=1).mean():.2f}  mean pairwise dist {pd:.2f}  erank {erank:.1f}")
stats(z_data, "data latents")
for ns in (1.0, 1.2):
    for rb in (0.0, 0.1):
        den = model.denoiser if rb == 0 else RoundedDenoiser(model, model.denoiser, rb)
        z = reverse_diffusion(den, model.schedule, (256, *model.latent_shape()), 25, "sde", ns, torch.Generator().manual_seed(0))
        stats(z, f"samples ns{ns} rb{rb}")
