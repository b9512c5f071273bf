"""The diffusion model f_theta: a bidirectional transformer over the N latents.

x0-parameterisation (predicts the clean latent), DiT-style adaLN time conditioning, and
self-conditioning (the previous estimate of z0 is concatenated to the noisy input).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Block, TimestepEmbedding


class Denoiser(nn.Module):
    def __init__(self, n: int, d: int, width: int, layers: int, heads: int, mlp_ratio: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.inp = nn.Linear(2 * d, width)  # [z_t, z_sc]
        self.pos = nn.Parameter(torch.zeros(n, width))
        self.time = TimestepEmbedding(width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, cond_width=width, dropout=dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, d)

    def forward(self, z_t, t, z_sc=None):
        """z_t [B, N, d], t [B] in [0, 1], z_sc [B, N, d] or None -> predicted z0 [B, N, d]."""
        if z_sc is None:
            z_sc = torch.zeros_like(z_t)
        x = self.inp(torch.cat([z_t, z_sc], dim=-1)) + self.pos
        c = self.time(t)
        for blk in self.blocks:
            x = blk(x, cond=c)
        return self.out(self.norm(x))
