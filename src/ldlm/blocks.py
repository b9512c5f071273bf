"""Transformer building blocks shared by every algorithm (LDLM parts, MDLM, AR).

One implementation each of attention (through `scaled_dot_product_attention`, so flash kernels
are used on GPU), the MLP, normalisation and time conditioning (DiT-style adaLN).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys/values of one attention layer for incremental (autoregressive) decoding."""

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, else cross-attention to it."""

    def __init__(self, width: int, heads: int, context_width: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(context_width or width, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x, context=None, key_mask=None, causal: bool = False, cache: KVCache | None = None):
        """x [B, T, W]; context [B, S, Wc]; key_mask [B, S] bool (True = attend)."""
        b, t, w = x.shape
        src = x if context is None else context
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)
        k, v = self.kv(src).view(b, src.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(k, v)
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]
        if causal and t > 1:
            # with a cache, the t new queries sit at the end of the k.shape[2] keys
            causal_mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
            mask = causal_mask if mask is None else mask & causal_mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, w))


class MLP(nn.Module):
    def __init__(self, width: int, ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(width, ratio * width)
        self.proj = nn.Linear(ratio * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP.

    With `cond_width`, each sub-layer is modulated by a conditioning vector (adaLN-Zero, as in
    DiT): shift/scale of the norm and a gate on the residual, initialised so the block starts as
    the identity.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, context_width: int | None = None,
                 cond_width: int | None = None, dropout: float = 0.0):
        super().__init__()
        affine = cond_width is None
        self.norm1 = nn.LayerNorm(width, elementwise_affine=affine)
        self.attn = Attention(width, heads, dropout=dropout)
        self.cross = None
        if context_width is not None:
            self.norm_c = nn.LayerNorm(width)
            self.cross = Attention(width, heads, context_width=context_width, dropout=dropout)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=affine)
        self.mlp = MLP(width, mlp_ratio, dropout)
        self.ada = None
        if cond_width is not None:
            self.ada = nn.Linear(cond_width, 6 * width)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x, cond=None, context=None, context_mask=None, self_mask=None, causal=False, cache=None):
        if self.ada is not None:
            s1, c1, g1, s2, c2, g2 = self.ada(F.silu(cond)).chunk(6, dim=-1)
            x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, c1), key_mask=self_mask)
        else:
            x = x + self.attn(self.norm1(x), key_mask=self_mask, causal=causal, cache=cache)
        if self.cross is not None:
            x = x + self.cross(self.norm_c(x), context=context, key_mask=context_mask)
        if self.ada is not None:
            x = x + g2[:, None] * self.mlp(modulate(self.norm2(x), s2, c2))
        else:
            x = x + self.mlp(self.norm2(x))
        return x


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t in [0, 1] followed by an MLP."""

    def __init__(self, width: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class TokenTransformer(nn.Module):
    """The baselines' network (AR causal, MDLM bidirectional): token embedding + learned positions,
    pre-norm `Block`s, a final norm, and an output head tied to the embedding (at small width the
    30k-row embedding is most of the parameter budget, so it is stored once)."""

    def __init__(self, vocab: int, max_len: int, width: int, layers: int, heads: int, mlp_ratio: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, ids, causal: bool = False, caches: list[KVCache] | None = None, start: int = 0):
        """ids [B, T] at positions start..start+T-1 -> hidden states [B, T, W] (see `logits`)."""
        x = self.drop(self.tok(ids) + self.pos[start:start + ids.shape[1]])
        for i, blk in enumerate(self.blocks):
            x = blk(x, causal=causal, cache=None if caches is None else caches[i])
        return self.norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., W] -> token logits [..., V] (float32) through the tied embedding."""
        return F.linear(h, self.tok.weight).float()


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
