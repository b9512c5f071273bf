"""What the session-14 sampling experiments share: the weaker-model guidance wrapper and the loop that samples and
scores a list of settings at a list of sampling seeds (256 samples, 25 steps, rounding below 0.1, `ldlm eval`'s
protocol against the checkpoint's 256 held-out references), writing the rows to a JSON file as each finishes."""
import json

import torch
from torch import nn

from ldlm.evaluation import build_references, make_evaluation
from ldlm.generate import generate

KEEP = ("gen_ppl", "entropy", "mauve", "mean_words", "mean_tokens", "distinct2_set")


class Guided(nn.Module):
    """Autoguidance (Karras et al. 2024): z0 = bad + w (good - bad); w = 1 is the good denoiser alone."""

    def __init__(self, good, bad):
        super().__init__()
        self.good, self.bad, self.w = good, bad, 1.0

    def forward(self, z, t, z_sc=None, given=None):
        g = self.good(z, t, z_sc, given).float()
        if self.w == 1.0:
            return g
        b = self.bad(z, t, z_sc, given).float()
        return b + self.w * (g - b)


def score_grid(model, out: str, settings: list, seeds: list[int], apply, describe) -> list[dict]:
    """For each setting and seed: `apply(setting)` (returns the noise scale to sample at), sample, score; the row is
    `describe(setting)` plus the seed and the metrics in KEEP."""
    torch.set_num_threads(1)
    refs, _, note = build_references("valid", model.cfg, 256, None, 0)
    ev = make_evaluation(None, refs, None, note, threads=1)
    res = []
    for setting in settings:
        for seed in seeds:
            ns = apply(setting)
            recs = generate(model, num=256, steps=25, seed=seed, noise_scale=ns, round_below=0.1)
            row = ev.evaluate([r["text"] for r in recs])
            r = {**describe(setting), "seed": seed, **{k: row.get(k) for k in KEEP}}
            print(json.dumps(r), flush=True)
            res.append(r)
            with open(out, "w") as f:
                json.dump(res, f, indent=1)
    return res
