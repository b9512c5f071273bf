"""TEncDM-style continuous diffusion baseline (Shabalin et al. 2024) in LDLM's harness.

Diffusion runs directly on the frozen LM's normalised hidden states: no trainable encoder, no compression
(L latents of width D, the LM's own), no latent decoder. A token decoder (`model.tok_dec_layers`
transformer blocks and the readout) maps hidden states to tokens; it is trained on noised states
(`recipe.dec_noise*`, TEncDM's corrupted-latent decoder training) by token CE. With a frozen encoder the
denoiser and the decoder share no parameters, so training them in one loop equals TEncDM's separate
stages: each gets exactly its own gradient. Everything else -- schedule, timestep sampler, sampler,
self-conditioning, the CLI -- is LDLM's.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .ldlm import LDLM


class Identity(nn.Module):
    """The frozen LM's states are the latents (they are already normalised per dimension)."""

    def forward(self, x, mask=None):
        return x


class TEncDM(LDLM):
    name = "tencdm"

    def __init__(self, cfg, tokenizer):
        if cfg.recipe.decoder_loss != "ce":
            raise UserError("algo=tencdm has no latent decoder, so only recipe.decoder_loss=ce applies; "
                            "set recipe.decoder_loss=ce (see configs/tiny-tencdm.yaml)")
        super().__init__(cfg, tokenizer)

    def build_encoder(self, m, L: int, D: int) -> nn.Module:
        return Identity()

    def build_decoder(self, m, L: int, D: int) -> nn.Module:
        return Identity()

    def reads_padding_states(self) -> bool:
        return True  # the latents are the states at every position, padding included

    def latent_shape(self) -> tuple[int, int]:
        return self.cfg.data.seq_len, self.frozen.hidden  # the LM's own states: L positions of width D

    def encode(self, h: torch.Tensor, mask: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        return h.float()
