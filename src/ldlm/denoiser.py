"""The diffusion model f_theta: a bidirectional transformer over the N latents.

x0- or v-parameterisation (`model.prediction`), DiT-style adaLN time conditioning, and
self-conditioning (the previous estimate of z0 is concatenated to the noisy input). For conditional
generation some latents are given clean: a fixed embedding marks them (`given`), and
`ClampedDenoiser` holds them fixed through a whole reverse process. `init_from_lm` starts the blocks'
attention and MLP weights from a pre-trained LM's (`model.den_init=lm`).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Block, TimestepEmbedding
from .errors import UserError


class Denoiser(nn.Module):
    def __init__(self, n: int, d: int, width: int, layers: int, heads: int, mlp_ratio: int = 4,
                 dropout: float = 0.0, prediction: str = "x0", schedule=None):
        super().__init__()
        if prediction not in ("x0", "v") or (prediction == "v" and schedule is None):
            raise ValueError(f"prediction must be 'x0' or 'v' (with a schedule), got {prediction!r}")
        self.prediction, self.schedule = prediction, schedule
        self.inp = nn.Linear(2 * d, width)  # [z_t, z_sc]
        self.pos = nn.Parameter(torch.zeros(n, width))
        # added to the input at given (clean, conditioning) latents: a fixed random direction, not a
        # parameter, so checkpoints and parameter counts are those of the unconditional model (the
        # trained layers learn to read it, as they would a learned embedding)
        flag = torch.randn(width, generator=torch.Generator().manual_seed(20240613)) * 0.5
        self.register_buffer("given_flag", flag, persistent=False)
        self.time = TimestepEmbedding(width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, cond_width=width, dropout=dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, d)

    def forward(self, z_t, t, z_sc=None, given=None):
        """z_t [B, N, d], t [B] in [0, 1], z_sc [B, N, d] or None, given [B, N] bool or None (which
        latents are clean conditioning) -> predicted z0 [B, N, d]. With prediction 'v' the network's output F
        is v = alpha eps - sigma z0, so z0 = alpha z_t - sigma F (for a variance-preserving schedule)."""
        if z_sc is None:
            z_sc = torch.zeros_like(z_t)
        x = self.inp(torch.cat([z_t, z_sc], dim=-1)) + self.pos
        if given is not None:
            x = x + given.unsqueeze(-1).to(x.dtype) * self.given_flag
        c = self.time(t)
        for blk in self.blocks:
            x = blk(x, cond=c)
        out = self.out(self.norm(x))
        if self.prediction == "x0":
            return out
        a, s = self.schedule.alpha(t).to(z_t.dtype), self.schedule.sigma(t).to(z_t.dtype)
        return a[:, None, None] * z_t - s[:, None, None] * out


# where a BERT-family block (BertLayer: MiniLM, BERT, ...) keeps the weights our Block's attention and MLP take
_BERT = {"attn.q.weight": "attention.self.query.weight", "attn.out.weight": "attention.output.dense.weight",
         "mlp.fc.weight": "intermediate.dense.weight", "mlp.fc.bias": "intermediate.dense.bias",
         "mlp.proj.weight": "output.dense.weight", "mlp.proj.bias": "output.dense.bias"}
_BERT_KV = ("attention.self.key.weight", "attention.self.value.weight")


@torch.no_grad()
def init_from_lm(denoiser: Denoiser, lm_blocks: nn.ModuleList, lm_heads: int, lm_name: str) -> None:
    """Copy the attention (q, k, v, output) and MLP weights of the LM's first len(denoiser.blocks) blocks into the
    denoiser's blocks. The LM's post-norm layers see normalised inputs, as our pre-norm sub-layers do, so each
    copied sub-layer starts close to the function it computed in the LM: the q/k/v and attention-output biases
    have no place in our bias-free attention and are left out, and the norms and adaLN keep their own init (no
    LM norm gains). The adaLN-Zero gates still start at 0 (the denoiser starts as its input projection) and open
    as it trains."""
    blocks = list(denoiser.blocks)
    if len(blocks) > len(lm_blocks):
        raise UserError(f"model.den_layers={len(blocks)} but the frozen LM '{lm_name}' has {len(lm_blocks)} blocks "
                        f"to start from; use model.den_layers<={len(lm_blocks)} or model.den_init=random")
    if blocks[0].attn.heads != lm_heads:  # the same weights split into other heads compute another attention
        raise UserError(f"model.den_heads={blocks[0].attn.heads} but the frozen LM '{lm_name}' has {lm_heads} heads; "
                        f"use model.den_heads=0 (the LM's) with model.den_init=lm")
    for ours, theirs in zip(blocks, lm_blocks):
        src = theirs.state_dict()
        if not all(k in src for k in (*_BERT.values(), *_BERT_KV)):
            raise UserError(f"model.den_init=lm needs a BERT-family frozen LM (MiniLM, BERT); '{lm_name}' "
                            f"({type(theirs).__name__} blocks) is not one; use model.den_init=random")
        dst = ours.state_dict()
        pairs = [(k, src[v]) for k, v in _BERT.items()]
        pairs.append(("attn.kv.weight", torch.cat([src[k] for k in _BERT_KV])))
        for k, w in pairs:
            if dst[k].shape != w.shape:
                raise UserError(f"model.den_init=lm: the denoiser's {k} is {tuple(dst[k].shape)}, the LM's "
                                f"{tuple(w.shape)}; set model.den_width and model.mlp_ratio to the LM's "
                                f"(width {lm_blocks[0].state_dict()[_BERT['attn.q.weight']].shape[0]})")
            dst[k].copy_(w)


class ClampedDenoiser:
    """The denoiser with some latents given, as `reverse_diffusion` calls it: `(z, t, z_sc) -> z0_hat`.

    At every step the given latents replace the sampler's state and self-conditioning input there and
    the estimate there is the given latent itself, so the reverse process is clamped to them.
    `guidance` w > 0 adds classifier-free guidance on the other latents, z0 = c + w (c - u), where u is
    the unconditional prediction: the sampler's own state everywhere, no latent marked given (the
    dropped condition the model was trained on), with its own self-conditioning chain.
    """

    def __init__(self, denoiser: Denoiser, z_given: torch.Tensor, given: torch.Tensor, guidance: float = 0.0):
        self.denoiser, self.z_given, self.given, self.guidance = denoiser, z_given, given, guidance
        self._g = given.unsqueeze(-1)
        self._sc_uncond = None

    def clamp(self, z: torch.Tensor) -> torch.Tensor:
        """`z` with the given latents put in."""
        return torch.where(self._g, self.z_given, z)

    def __call__(self, z, t, z_sc=None):
        zin = self.clamp(z)
        sc = None if z_sc is None else self.clamp(z_sc)
        out = self.denoiser(zin, t, sc, self.given).float()
        if self.guidance > 0:
            uncond = self.denoiser(z, t, self._sc_uncond if z_sc is not None else None).float()
            self._sc_uncond = uncond
            out = out + self.guidance * (out - uncond)
        return self.clamp(out)
