"""Transformer building blocks shared by every algorithm (LDLM parts, MDLM, AR).

One implementation each of attention (through `scaled_dot_product_attention`, so flash kernels
are used on GPU), the MLP, normalisation and time conditioning (DiT-style adaLN).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .precision import sdpa
from .vocab import VocabSubset


class KVCache:
    """Keys/values of one attention layer for incremental (autoregressive) decoding.

    One [B, heads, max_len, head_dim] buffer each for keys and values, allocated on the first write
    (with the keys' dtype and device, so bf16 autocast needs no second copy) and then written in
    place: a decoding step costs no reallocation and no concatenation of the whole prefix.
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.len = 0  # positions written so far

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, heads, t, head_dim] at the next t positions; the keys/values so far."""
        t = k.shape[2]
        if self.len + t > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} positions cannot take {self.len} + {t}")
        if self.k is None:
            b, h, _, d = k.shape
            self.k = k.new_empty(b, h, self.max_len, d)
            self.v = v.new_empty(b, h, self.max_len, v.shape[-1])
        self.k[:, :, self.len:self.len + t] = k
        self.v[:, :, self.len:self.len + t] = v
        self.len += t
        return self.k[:, :, :self.len], self.v[:, :, :self.len]


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
        s = k.shape[2]
        mask = None if key_mask is None else key_mask[:, None, None, :]
        # causal with queries = keys and no other mask: is_causal=True, no mask tensor (flash-eligible on
        # GPU). One new query against a cache attends to every key, so it needs no mask either.
        is_causal = causal and t > 1 and t == s and mask is None
        if causal and t > 1 and not is_causal:
            # the t new queries sit at the end of the s keys (a cached prefill, or a key mask besides)
            causal_mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
            mask = causal_mask if mask is None else mask & causal_mask
        # fp32 on CPU under bf16 autocast when trained: the bf16 backward kernel is the slow one (precision.py)
        y = sdpa(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0)
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


class TokenTransformer(VocabSubset, nn.Module):
    """The baselines' network (AR causal, MDLM bidirectional): token embedding + learned positions,
    pre-norm `Block`s, a final norm, and an output head tied to the embedding (at small width the
    30k-row embedding is most of the parameter budget, so it is stored once).

    Inputs are tokenizer ids; outputs (`logits`) are over the output vocabulary (`vocab.VocabSubset`:
    every token, or with `set_vocab` the training corpus's), so targets need `to_local` and sampled
    ids `to_global`. `never` are input-only tokens (MDLM's [MASK]), never an output.
    """

    def __init__(self, vocab: int, max_len: int, width: int, layers: int, heads: int, mlp_ratio: int = 4,
                 dropout: float = 0.0, unk_id: int = 0, never: tuple[int, ...] = ()):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.init_vocab(vocab, unk_id, never)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, ids, causal: bool = False, caches: list[KVCache] | None = None, start: int = 0):
        """ids [B, T] at positions start..start+T-1 -> hidden states [B, T, W] (see `logits`)."""
        x = self.drop(self.tok(ids) + self.pos[start:start + ids.shape[1]])
        for i, blk in enumerate(self.blocks):
            x = blk(x, causal=causal, cache=None if caches is None else caches[i])
        return self.norm(x)

    def new_caches(self) -> list[KVCache]:
        """One preallocating KV cache per block, for a decoding pass over at most max_len positions."""
        return [KVCache(self.pos.shape[0]) for _ in self.blocks]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., W] -> logits [..., V_out] (float32) over the output vocabulary, through
        the tied embedding's rows of those tokens."""
        w = self.tok.weight if self.vocab_is_full() else self.tok.weight[self.vocab_ids()]
        return F.linear(h, w).float()


def param_counts(model: nn.Module, vocab_size: int) -> dict[str, int]:
    """Parameters of a model split three ways (the issue of "matched parameters" is which count).

    embedding: trainable tensors with a vocabulary-sized dimension (token embeddings, tied or
    untied output heads, vocabulary-sized biases): they grow with the tokenizer, not with depth or
    width. non_embedding: every other trainable tensor (positions included). frozen: parameters that
    never train (LDLM's pre-trained LM). Counted as stored, whether or not a restricted output
    vocabulary (`model.readout_vocab=corpus`) ever uses all rows.
    """
    out = {"embedding": 0, "non_embedding": 0, "frozen": 0}
    for p in model.parameters():  # a tied weight is listed (and counted) once
        if not p.requires_grad:
            out["frozen"] += p.numel()
        elif vocab_size in p.shape:
            out["embedding"] += p.numel()
        else:
            out["non_embedding"] += p.numel()
    out["trainable"] = out["embedding"] + out["non_embedding"]
    return out


def format_param_counts(c: dict[str, int]) -> str:
    return (f"{c['trainable'] / 1e6:.2f} M trainable parameters ({c['embedding'] / 1e6:.2f} M embedding, "
            f"{c['non_embedding'] / 1e6:.2f} M non-embedding), {c['frozen'] / 1e6:.2f} M frozen")


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
