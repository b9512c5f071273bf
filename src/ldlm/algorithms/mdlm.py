"""MDLM: masked (absorbing-state) discrete diffusion, after Sahoo et al. 2024.

Forward process: each token is independently replaced by [MASK] with probability 1 - alpha_t, with
the log-linear schedule alpha_t = 1 - t. The network is a bidirectional transformer over x_t and
the SUBS parameterisation: the [MASK] logit is -inf (zero masking probability) and unmasked tokens
are carried over, so only masked positions carry loss. The continuous-time NELBO is

    E_t [ alpha'_t / (1 - alpha_t) * sum_{l masked} log p(x_l | x_t) ] = E_t [ 1/t * sum_{l masked} -log p(x_l | x_t) ].

Choices: [CLS] at position 0 is given (never masked), as it is for AR, so the two bound the same
quantity; [SEP] and [PAD] are diffused like any token (as MDLM does on padded LM1B), so the model
decides the passage length. Losses are normalised per real token after [CLS] (AR's denominator),
so `nelbo` is directly comparable with AR's `nll`. No time conditioning: MDLM found it
unnecessary, and without it the network output depends on x_t alone, which is what makes the
cached sampler exact.
"""
from __future__ import annotations

import math

import torch

from ..config import Config, SampleConfig
from .ar import Baseline, baseline_net, sample_tokens


class MDLM(Baseline):
    name = "mdlm"

    def __init__(self, cfg: Config, tokenizer):
        super().__init__(cfg, tokenizer)
        self.mask_id, self.cls_id = tokenizer.mask_token_id, tokenizer.cls_token_id
        # [MASK] is an input, never an output: that is SUBS's zero masking probability
        self.net = baseline_net(cfg, tokenizer, never=(self.mask_id,))
        self.rows_computed = 0  # sequences the network ran on in the last `generate_ids` (cache savings)

    # -- forward process and loss ---------------------------------------------------------
    def noise(self, ids, t, generator=None):
        """x_t: each token after [CLS] masked with probability 1 - alpha_t = t; also the mask."""
        # a seeded draw (evaluation) comes from the CPU generator; training draws on the device
        u = torch.rand(ids.shape, generator=generator).to(ids.device) if generator is not None else \
            torch.rand(ids.shape, device=ids.device)
        masked = u < t[:, None]
        masked[:, 0] = False
        return torch.where(masked, self.mask_id, ids), masked

    def subs_logits(self, h):
        """SUBS: logits of p_theta(x_0 | x_t) at masked positions, over the output vocabulary (local
        ids), which never holds [MASK] (`never` of the network): [MASK] itself is impossible."""
        return self.net.logits(h)

    def nelbo(self, ids, mask, t, generator=None):
        """Summed continuous-time NELBO terms of a batch at times t [B], and the number of real
        tokens after [CLS] (the per-token denominator)."""
        x_t, masked = self.noise(ids, t, generator)
        h = self.net(x_t)
        # unmasked positions are carried over (zero loss), so the 30k-way head runs on masked ones only
        target = self.net.to_local(ids[masked])
        logp = self.subs_logits(h[masked]).log_softmax(-1).gather(-1, target[:, None]).squeeze(-1)
        weight = (1.0 / t)[:, None].expand_as(masked)[masked]  # -alpha'_t / (1 - alpha_t) = 1/t
        return -(weight * logp).sum(), mask[:, 1:].sum()

    def loss(self, batch, step):
        ids = batch["ids"]
        b, eps = ids.shape[0], self.cfg.model.mask_eps
        # stratified (low-discrepancy) t across the batch lowers the variance of the estimate
        u = (torch.rand((), device=ids.device) + torch.arange(b, device=ids.device) / b) % 1.0
        t = eps + (1 - eps) * u
        total, n = self.nelbo(ids, batch["mask"], t)
        loss = total / n
        return loss, {"loss": loss.detach()}  # read once per log interval

    @torch.no_grad()
    def evaluate(self, batch, generator):
        """Validation NELBO per token (nats; a bound on the NLL, same tokens as AR's `nll`) on a
        fixed, evenly spaced t grid across the batch, and the perplexity bound exp(nelbo)."""
        ids = batch["ids"]
        b, eps = ids.shape[0], self.cfg.model.mask_eps
        t = eps + (1 - eps) * (torch.arange(b, device=ids.device) + 0.5) / b
        total, n = self.nelbo(ids, batch["mask"], t, generator)
        nelbo = (total / n).item()
        return {"loss": nelbo, "nelbo": nelbo, "ppl": math.exp(min(nelbo, 700.0))}

    # -- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, num, sc: SampleConfig, generator, device, callback=None, given=None):
        """Ancestral sampling with `sc.steps` steps on the grid t = 1, 1 - 1/S, ..., 1/S -> 0.

        From t to s each masked token is unmasked with probability (alpha_s - alpha_t)/(1 - alpha_t)
        = (t - s)/t and then drawn from p_theta(x_0 | x_t) (temperature, top-p, float64); this is
        q(x_s | x_t, x_0 = p_theta) factorised, so only unmasked tokens need a categorical draw.
        At s = 0 every remaining mask is filled. With `sc.cache`, rows unchanged since the previous
        step reuse their hidden states (exact: no time conditioning), so samples equal the uncached ones.
        `given` tokens (a prompt, a suffix, both) are never masked, so they stay as they are.
        """
        L, S = self.cfg.data.seq_len, sc.steps
        x = torch.full((num, L), self.mask_id, dtype=torch.long, device=device)
        x[:, 0] = self.cls_id
        if given is not None:
            given = given.to(device)
            x = torch.where(given.mask, given.ids, x)
        h, changed = None, torch.ones(num, dtype=torch.bool, device=device)
        self.rows_computed = 0
        for i in range(S, 0, -1):
            t, s = i / S, (i - 1) / S
            if h is None or not sc.cache:
                h = self.net(x)
                self.rows_computed += num
            elif changed.any():
                h[changed] = self.net(x[changed])
                self.rows_computed += int(changed.sum())
            u = torch.rand(num, L, generator=generator, dtype=torch.float64).to(device)
            unmask = (x == self.mask_id) & (u < (t - s) / t)
            x = x.clone()
            if unmask.any():
                local = sample_tokens(self.subs_logits(h[unmask]), sc.temperature, sc.top_p, generator)
                x[unmask] = self.net.to_global(local)
            changed = unmask.any(1)
            if callback is not None:
                callback(S - i, t, x)  # still-masked positions hold [MASK]
        return x
