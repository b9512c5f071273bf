"""Experiment: round the denoiser's estimate to text and back at the last sampling steps (Diffusion-LM's clamping).

Below time `--below`, each step's estimate of z0 is decoded to tokens (argmax, cut after the first [SEP]), and
those tokens go through the frozen LM and the encoder again; the sampler continues from that re-encoded latent,
which is the latent of a real token sequence, instead of the denoiser's posterior mean (a blend of several).
Diffusion-LM (Li et al. 2022) rounds to the nearest word embedding the same way. Writes a samples file for
`ldlm eval`:

    .venv/bin/python bench/rounding.py --ckpt runs/levers/latent-d32 --below 0.3 --out runs/rounding/b0.3.jsonl
    .venv/bin/ldlm eval runs/rounding/b0.3.jsonl --out runs/rounding/b0.3-eval.json --threads 1

`--below 0` rounds nowhere (the plain sampler); `--below 1.01` at every step.
"""
from __future__ import annotations

import argparse

import torch

import ldlm.algorithms.ldlm as ldlm_algo
from ldlm.generate import generate, load_model, write_samples


def cut_after_sep(ids: torch.Tensor, sep: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids with every position after the first [SEP] set to [PAD], the mask of the positions kept)."""
    L = ids.shape[1]
    is_sep = ids == sep
    first = torch.where(is_sep.any(1), is_sep.float().argmax(1), torch.full_like(ids[:, 0], L - 1))
    mask = torch.arange(L, device=ids.device)[None] <= first[:, None]
    return torch.where(mask, ids, pad), mask


class Rounding:
    """`reverse_diffusion`'s denoiser, with its estimate replaced by encode(decode(estimate)) below time `below`."""

    def __init__(self, model, denoiser, below: float):
        self.model, self.denoiser, self.below = model, denoiser, below
        tok = model.tokenizer
        self.sep, self.pad = tok.sep_token_id, tok.pad_token_id

    def __call__(self, z, t, z_sc=None):
        z0 = self.denoiser(z, t, z_sc).float()
        if float(t[0]) >= self.below:
            return z0
        ids, mask = cut_after_sep(self.model.decode_latents(z0), self.sep, self.pad)
        return self.model.encode(self.model.frozen.features(ids, mask), mask, frozen=True)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="LDLM run or checkpoint folder")
    p.add_argument("--out", required=True, help="samples .jsonl to write")
    p.add_argument("--below", type=float, required=True, help="round the estimate at steps starting below this t")
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--noise-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.ckpt, device="cpu")
    solve = ldlm_algo.reverse_diffusion
    ldlm_algo.reverse_diffusion = lambda den, *args, **kw: solve(Rounding(model, den, a.below), *args, **kw)
    try:
        records = generate(model, num=a.num, steps=a.steps, noise_scale=a.noise_scale)
    finally:
        ldlm_algo.reverse_diffusion = solve
    for r in records:
        r["rounded_below"] = a.below
    write_samples(records, a.out)
    return records


if __name__ == "__main__":
    main()
