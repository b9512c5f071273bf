"""Experiment: autoguidance (Karras et al. 2024) with a small denoiser trained afterwards on the trained model's own
latents (frozen encoder) as the 'bad' model: z0 = bad + w (good - bad). The good model is the checkpoint's EMA.
Usage: guide.py CKPT OUT.json layers:width:steps w:noise,... seed,..."""
import copy
import sys
import time

import torch

from common import Guided, score_grid
from ldlm.data import BatchIterator, load_corpus
from ldlm.denoiser import Denoiser
from ldlm.features import CorpusFeatures
from ldlm.generate import load_model

torch.set_num_threads(1)
ckpt, out = sys.argv[1], sys.argv[2]
layers, width, steps = map(int, sys.argv[3].split(":"))  # guide shape and its training steps
settings = [tuple(map(float, s.split(":"))) for s in sys.argv[4].split(",")]  # w:noise
seeds = [int(x) for x in sys.argv[5].split(",")]
model = load_model(ckpt)
cfg = model.cfg
corpus = load_corpus(cfg.data, model.tokenizer, cfg.model.lm)
B = cfg.train.batch_size
it = BatchIterator(len(corpus.train.ids), B, cfg.train.seed)
rows = it.rows_within(cfg.train.steps)  # the rows the run itself read: all in the feature cache
print("rows", len(rows), flush=True)
model.splits = {"train": corpus.train, "valid": corpus.valid}
model.features = CorpusFeatures(model.frozen, corpus, cfg.data, "cpu", {"train": rows, "valid": torch.arange(0)})
n, d = model.latent_shape()
torch.manual_seed(0)
guide = Denoiser(n, d, width, layers, cfg.model.heads, cfg.model.mlp_ratio, cfg.model.dropout)
ema = copy.deepcopy(guide).requires_grad_(False)
opt = torch.optim.AdamW(guide.parameters(), lr=cfg.train.lr, weight_decay=0.01)
t0 = time.time()
for i in range(steps):
    idx = rows[torch.randint(len(rows), (B,))]
    batch = model.get_batch("train", idx, "cpu")
    z0 = model.encode(batch["h"], batch["mask"], frozen=True)
    t = torch.rand(B)
    z_t = model.schedule.noise(z0, t)
    z_sc = None
    if torch.rand(()) < 0.5:
        with torch.no_grad():
            z_sc = guide(z_t, t).float()
    loss = ((guide(z_t, t, z_sc).float() - z0) ** 2).mean()
    lr = cfg.train.lr * min(1.0, (i + 1) / 25) * 0.5 * (1 + torch.cos(torch.tensor(i / steps * 3.14159)).item())
    for gr in opt.param_groups:
        gr["lr"] = lr
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for e, p in zip(ema.parameters(), guide.parameters()):
            e.lerp_(p, 1 - cfg.train.ema)
    if i % 100 == 0:
        print(f"guide step {i} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
ema.eval()


guided = Guided(model.denoiser, ema)
model.denoiser = guided


def apply(s):
    guided.w = s[0]
    return s[1]


score_grid(model, out, settings, seeds, apply,
           lambda s: {"w": s[0], "noise_scale": s[1], "ckpt": ckpt, "guide": [layers, width, steps]})
