"""The trainable halves of the latent space: the compressing latent encoder, the decoder back to
the frozen LM's hidden space, and the token readout."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block, KVCache
from .vocab import VocabSubset


class LatentNorm(nn.Module):
    """Normalises latents so a constant latent is impossible.

    'batch': every (position, channel) is standardised with statistics over the batch while
    training and running statistics at evaluation (BatchNorm without affine), so latents keep unit
    variance *across sequences*. 'layer': per-vector LayerNorm (fixes each vector's scale only;
    did not prevent collapse in the prototype). 'none': identity.
    """

    def __init__(self, kind: str, n: int, d: int, momentum: float = 0.01):
        super().__init__()
        self.kind = kind
        if kind == "batch":
            self.bn = nn.BatchNorm1d(n * d, affine=False, momentum=momentum, eps=1e-6)
        elif kind == "layer":
            self.ln = nn.LayerNorm(d, elementwise_affine=False)

    def forward(self, z):
        if self.kind == "batch":
            b, n, d = z.shape
            if self.training and b == 1:  # batch statistics need two sequences; fall back to running ones
                return F.batch_norm(z.reshape(b, -1).float(), self.bn.running_mean, self.bn.running_var,
                                    training=False, eps=self.bn.eps).view(b, n, d)
            return self.bn(z.reshape(b, n * d).float()).view(b, n, d)
        if self.kind == "layer":
            return self.ln(z)
        return z


def to_windows(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, L, W] -> [B, N, ceil(L/N) * W]: consecutive windows of positions, concatenated in order
    (zero-padded at the end when N does not divide L)."""
    b, L, w = x.shape
    r = -(-L // n)
    if r * n != L:
        x = F.pad(x, (0, 0, 0, r * n - L))
    return x.reshape(b, n, r * w)


class LatentEncoder(nn.Module):
    """Perceiver resampler: N learned queries self-attend and cross-attend to the LM's hidden states.

    Each query starts from its own window of L/N positions, "patchified" (ours): the window's
    states are concatenated in order and projected, like a ViT patch embedding. Attention can still
    route anything anywhere, but the identity-like routing an autoencoder needs first is there from
    step 0. (A masked *mean* over the window lost the order inside it, and the decoder learned to
    write one token L/N times.)
    """

    def __init__(self, hidden: int, seq_len: int, n: int, d: int, width: int, layers: int, heads: int,
                 mlp_ratio: int = 4, dropout: float = 0.0, norm: str = "batch"):
        super().__init__()
        self.inp = nn.Linear(hidden, width)
        self.pos = nn.Parameter(torch.zeros(seq_len, width))
        self.queries = nn.Parameter(torch.randn(n, width) * 0.02)
        self.window = -(-seq_len // n)  # ceil(L / N) positions per latent (the last window may be short)
        self.patch = nn.Linear(self.window * width, width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, context_width=width, dropout=dropout)
                                    for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))
        self.norm = LatentNorm(norm, n, d)

    def forward(self, h, mask, normalise: bool = True):
        """h [B, L, D] normalised LM states, mask [B, L] -> z0 [B, N, d]."""
        ctx = self.inp(h) + self.pos[: h.shape[1]]
        x = self.queries + self.patch(to_windows(ctx * mask.unsqueeze(-1).to(ctx.dtype), self.queries.shape[0]))
        for blk in self.blocks:
            x = blk(x, context=ctx, context_mask=mask)
        z = self.out(x)
        return self.norm(z) if normalise else z


class LatentDecoder(nn.Module):
    """L position queries self-attend and cross-attend to the N latents; output in the LM's hidden space.

    Each position's query starts from its slice of an "unpatchified" projection of the latent that
    owns its window (the mirror of the encoder's patch embedding), then attention refines.
    """

    def __init__(self, hidden: int, seq_len: int, n: int, d: int, width: int, layers: int, heads: int,
                 mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.latent_pos = nn.Parameter(torch.zeros(n, width))
        # unit-scale position queries: positions that share a latent must differ from step 0, or the
        # decoder starts by writing the same token at all L/N positions of a window
        self.queries = nn.Parameter(torch.randn(seq_len, width))
        self.window = -(-seq_len // n)
        self.unpatch = nn.Linear(width, self.window * width)  # the mirror of the encoder's patch embedding
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, context_width=width, dropout=dropout)
                                    for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden))

    def forward(self, z):
        ctx = self.inp(z) + self.latent_pos
        b, n, w = ctx.shape
        x = self.queries + self.unpatch(ctx).reshape(b, n * self.window, w)[:, : self.queries.shape[0]]
        for blk in self.blocks:
            x = blk(x, context=ctx)
        return self.out(x)


class Readout(VocabSubset, nn.Module):
    """Hidden states (normalised LM space) -> token logits over the readout vocabulary.

    'tied': a small MLP head, then the frozen LM's own word-embedding matrix (as BERT's MLM head),
    so the head has ~D^2 parameters instead of D x vocab. 'linear': a full trainable projection.
    The vocabulary can be restricted to the tokens the training corpus uses (`set_vocab`): the
    softmax over the LM's whole vocabulary is the most expensive op of a step, and a token never
    seen in training is one the model should not emit. Logits are over that subset ("local" ids);
    `to_local`/`to_global` convert; tokens outside it map to [UNK] (`vocab.VocabSubset`).
    """

    def __init__(self, hidden: int, vocab: int, kind: str = "tied", embeddings: torch.Tensor | None = None,
                 unk_id: int = 0):
        super().__init__()
        self.kind = kind
        if kind == "tied":
            self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
            self.register_buffer("emb", embeddings.detach().clone(), persistent=False)
            self.bias = nn.Parameter(torch.zeros(vocab))
        else:
            self.proj = nn.Linear(hidden, vocab)
        self.init_vocab(vocab, unk_id)  # the `allowed` buffer, saved with the weights

    def forward(self, h, local: torch.Tensor | None = None):
        """Logits over the readout vocabulary, or over its local ids `local` only (a sampled softmax)."""
        v = self.vocab_ids() if local is None else self.vocab_ids()[local]
        if self.kind == "tied":
            return self.head(h) @ self.emb[v].to(h.dtype).t() + self.bias[v]
        return F.linear(h, self.proj.weight[v], self.proj.bias[v])


class TokenDecoder(nn.Module):
    """The paper's separate token decoder: hidden states [B, L, D] -> refined states for the readout.

    `layers` bidirectional transformer blocks in their own width, added back to the input as a residual
    (so it starts as the identity and the readout keeps working from step 0); with layers = 0 it *is*
    the identity and the readout alone decodes (a per-position head). Trained on stopgrad(h_hat) and on
    the true h, so it learns to read the latent decoder's imperfect states without shaping them.

    `causal`: the blocks attend only to earlier positions and each position also reads the word embedding
    of the token before it (`prev`), so the readout at position i is p(token_i | h_<=i, tokens_<i): a
    left-to-right decoder conditioned on the latent decoder's states, decoded token by token at sampling
    (with `caches`, one position at a time from `start`) -- what the latents leave open is filled in
    coherently with what was already written instead of position by position.

    `masked`: the blocks stay bidirectional and each position also reads the word embedding of its own token in a
    draft of the passage, or of [MASK] where the draft has none (`tokens`), so the readout at position i is
    p(token_i | h, the draft's other tokens): decoded in a few parallel passes at sampling, each writing the
    positions it is surest of (mask-predict) -- non-autoregressive, yet each pass reads what the last ones wrote.
    """

    def __init__(self, hidden: int, seq_len: int, layers: int, width: int, heads: int, mlp_ratio: int = 4,
                 dropout: float = 0.0, causal: bool = False, masked: bool = False):
        super().__init__()
        self.layers = layers
        self.causal = causal and layers > 0
        self.masked = masked and layers > 0
        if layers:
            self.inp = nn.Linear(hidden, width)
            self.pos = nn.Parameter(torch.zeros(seq_len, width))
            self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout=dropout) for _ in range(layers))
            self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden))
            nn.init.zeros_(self.out[1].weight)
            nn.init.zeros_(self.out[1].bias)
            if self.causal:
                self.prev = nn.Linear(hidden, width)  # the previous token's (frozen) word embedding
            if self.masked:
                self.draft = nn.Linear(hidden, width)  # the draft's token (or [MASK]) at the position itself

    def forward(self, h, tokens=None, caches: list[KVCache] | None = None, start: int = 0):
        """h [B, T, D] at positions start..start+T-1; `tokens` [B, T, D]: the (frozen) word embeddings of the
        tokens before those positions (causal) or of the draft's tokens at them (masked)."""
        if not self.layers:
            return h
        x = self.inp(h) + self.pos[start:start + h.shape[1]]
        if self.causal:
            x = x + self.prev(tokens.to(x.dtype))
        elif self.masked:
            x = x + self.draft(tokens.to(x.dtype))
        for i, blk in enumerate(self.blocks):
            x = blk(x, causal=self.causal, cache=None if caches is None else caches[i])
        return h + self.out(x)

    def new_caches(self) -> list[KVCache]:
        """One KV cache per block, for a left-to-right decoding pass (causal only)."""
        return [KVCache(self.pos.shape[0]) for _ in self.blocks]
