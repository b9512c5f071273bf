"""LDLM: latent encoder, diffusion model and decoder trained jointly, in one loop.

Data flow of one step (DESIGN.md section 1):
    x -> frozen LM -> h -> encoder -> z0 -> z_t = alpha z0 + sigma eps -> denoiser -> z0_hat
                                       z0 -> (decoder-input noise) -> decoder -> h_hat -> readout -> logits
Loss: L_diff + lambda_dec * ||h_hat - h||^2 + lambda_ce * CE(readout(h_hat), x) + lambda_read * CE(readout(h), x)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..autoencoder import LatentDecoder, LatentEncoder, Readout
from ..config import Config, SampleConfig
from ..data import Corpus
from ..denoiser import Denoiser
from ..errors import UserError
from ..frozen_lm import FrozenLM, cached_features, compute_features
from ..recipe import decoder_input_noise, encoder_weight, mix_gradient
from ..sampling import reverse_diffusion
from ..schedules import make_schedule
from ..timesteps import make_timesteps
from .base import Algorithm


def collapse_stats(z: torch.Tensor) -> dict:
    """Collapse diagnostics of a batch of latents [B, N, d], as the diffusion model sees them.

    latent_cos: mean cosine between different sequences' latents (near 1 = one latent for all;
    meaningful for 'layer'/'none' normalisation, ~0 by construction under 'batch').
    latent_erank: effective rank of the centred latents across the batch, as a share of its maximum
    (exp of the entropy of the singular-value spectrum); a low value means the sequences' latents
    span only a few directions, which batch normalisation alone cannot prevent.
    """
    x = z.detach().float().flatten(1)
    b = x.shape[0]
    if b < 3:
        return {}
    xn = F.normalize(x, dim=1)
    cos = ((xn @ xn.t()).sum() - b) / (b * (b - 1))
    sv = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = sv / sv.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()) / min(b - 1, x.shape[1])
    return {"latent_cos": cos.item(), "latent_erank": erank.item()}


class LDLM(Algorithm):
    name = "ldlm"

    def __init__(self, cfg: Config, tokenizer):
        super().__init__(cfg, tokenizer)
        m, L = cfg.model, cfg.data.seq_len
        self.frozen = FrozenLM(m.lm)
        if L > self.frozen.max_positions:
            raise UserError(f"data.seq_len={L} is longer than the frozen LM's {self.frozen.max_positions} "
                            f"positions; use data.seq_len<={self.frozen.max_positions}")
        D = self.frozen.hidden
        self.encoder = LatentEncoder(D, L, m.latent_len, m.latent_dim, m.enc_width, m.enc_layers, m.heads,
                                     m.mlp_ratio, m.dropout, m.latent_norm)
        self.denoiser = Denoiser(m.latent_len, m.latent_dim, m.den_width, m.den_layers, m.heads, m.mlp_ratio,
                                 m.dropout)
        self.decoder = LatentDecoder(D, L, m.latent_len, m.latent_dim, m.dec_width, m.dec_layers, m.heads,
                                     m.mlp_ratio, m.dropout)
        self.readout = Readout(D, self.vocab_size, m.readout, self.frozen.word_embeddings(),
                               unk_id=tokenizer.unk_token_id or 0)
        self.schedule = make_schedule(m.schedule, m.schedule_d)
        self.timesteps = make_timesteps(cfg.recipe)
        self.feats: dict[str, torch.Tensor] = {}

    # -- data -----------------------------------------------------------------------------
    def prepare(self, corpus: Corpus, device) -> None:
        super().prepare(corpus, device)
        if self.cfg.model.readout_vocab == "corpus":
            specials = [i for i in (self.tokenizer.pad_token_id, self.tokenizer.cls_token_id,
                                    self.tokenizer.sep_token_id) if i is not None]
            self.readout.set_vocab(torch.unique(corpus.train.ids), always=tuple(specials))
        dc = self.cfg.data
        dev = str(device)
        for name, split in self.splits.items():
            if dc.cache_features:
                key = f"{corpus.fingerprint}-{name}"
                self.feats[name] = cached_features(self.frozen, split.ids, split.mask, dc.cache_dir, key, dev)
        # per-dimension normalisation from (up to 4096 passages of) the training split
        sample = self.feats["train"][:4096] if "train" in self.feats else compute_features(
            self.frozen, corpus.train.ids[:1024], corpus.train.mask[:1024], device=dev)
        n = sample.shape[0]
        self.frozen.fit_normalisation(sample.float().to(device), corpus.train.mask[:n].to(device))

    def get_batch(self, split, idx, device):
        batch = super().get_batch(split, idx, device)
        if split in self.feats:
            raw = self.feats[split][idx].to(device).float()
            batch["h"] = self.frozen.normalise(raw)
        else:
            batch["h"] = self.frozen.features(batch["ids"], batch["mask"])
        return batch

    # -- losses ---------------------------------------------------------------------------
    def _decoder_losses(self, h_hat, h, ids, mask) -> dict:
        """Hidden-state MSE and token CE/accuracy on the real tokens ([CLS] ... [SEP]).

        Positions after [SEP] are left out: a sample is cut at its first [SEP], so what the decoder
        puts after it never reaches text, and the 30k-way softmax there would be wasted work."""
        h_hat = h_hat.float()
        out = {"dec_mse": ((h_hat[mask] - h[mask]) ** 2).mean()}
        logits = self.readout(h_hat[mask]).float()
        target = self.readout.to_local(ids[mask])
        out["dec_ce"] = F.cross_entropy(logits, target)
        out["dec_acc"] = (logits.argmax(-1) == target).float().mean()
        return out

    def loss(self, batch, step):
        rc, total_steps = self.cfg.recipe, self.cfg.train.steps
        ids, mask, h = batch["ids"], batch["mask"], batch["h"]
        b = ids.shape[0]
        # two-stage (TEncDM/COSMOS): stage 1 trains the autoencoder alone (no diffusion loss), stage 2
        # the denoiser alone on frozen latents (encoder under no_grad with running latent statistics)
        stage = 0 if rc.two_stage <= 0 else (1 if step < rc.two_stage * total_steps else 2)
        if stage == 2:
            was_training = self.encoder.training
            self.encoder.eval()
            with torch.no_grad():
                z_pre = self.encoder(h, mask, normalise=False)
                z0 = self.encoder.norm(z_pre).float()
            self.encoder.train(was_training)
        else:
            z_pre = self.encoder(h, mask, normalise=False)
            z0 = self.encoder.norm(z_pre).float()
        loss = torch.zeros((), device=ids.device)
        logs: dict = {"stage": stage} if stage else {}

        # 1. diffusion loss; its gradient into the encoder is scaled by the warmup weight w
        w = encoder_weight(step, total_steps, rc.warmup_start, rc.warmup_ramp, rc.w_max)
        if stage != 1:
            z0_diff = mix_gradient(z0, w)
            target = z0_diff.detach() if rc.diff_target_stopgrad else z0_diff
            t = self.timesteps.sample(b, device=ids.device)
            z_t = self.schedule.noise(z0_diff, t)
            z_sc = None
            if torch.rand(()) < self.cfg.model.self_cond_prob:
                with torch.no_grad():
                    z_sc = self.denoiser(z_t, t).float()
            z0_hat = self.denoiser(z_t, t, z_sc).float()
            per_sample = ((z0_hat - target) ** 2).mean(dim=(1, 2))
            l_diff = per_sample.mean()
            self.timesteps.update(t, per_sample)
            loss = loss + l_diff
            logs.update({"diff": l_diff.item(), "w_enc": w})

        # 2.+4. decoder on noised latents: hidden-state MSE + token CE (or CE alone)
        if stage != 2:
            z_dec = decoder_input_noise(z0, self.schedule, rc.dec_noise_max)
            dec = self._decoder_losses(self.decoder(z_dec), h, ids, mask)
            loss = loss + rc.lambda_ce * dec["dec_ce"]
            logs.update({"dec_ce": dec["dec_ce"].item(), "dec_acc": dec["dec_acc"].item(),
                         "dec_mse": dec["dec_mse"].item()})
        if stage != 2 and rc.decoder_loss == "mse":
            loss = loss + rc.lambda_dec * dec["dec_mse"]
            # readout anchored to the frozen LM's own hidden states (optionally on part of the batch:
            # the vocabulary-wide softmax is the most expensive op of a step)
            q = max(1, round(b * rc.read_fraction))
            read_logits = self.readout(h[:q]).float()
            m = mask[:q]
            l_read = F.cross_entropy(read_logits[m], self.readout.to_local(ids[:q][m]))
            loss = loss + rc.lambda_read * l_read
            logs["read_ce"] = l_read.item()
        logs.update(collapse_stats(z0))
        logs["loss"] = loss.item()
        return loss, logs

    @torch.no_grad()
    def evaluate(self, batch, generator):
        """Held-out diffusion loss on a stratified t grid, its trivial-predictor reference, and
        reconstruction accuracy of decode(encode(x))."""
        ids, mask, h = batch["ids"], batch["mask"], batch["h"]
        b = ids.shape[0]
        z_pre = self.encoder(h, mask, normalise=False)
        z0 = self.encoder.norm(z_pre).float()
        t = ((torch.arange(b) + torch.rand(b, generator=generator)) / b).clamp(self.cfg.recipe.t_min, 1.0)
        t = t.to(ids.device)
        eps = torch.randn(z0.shape, generator=generator).to(z0.device)
        z_t = self.schedule.noise(z0, t, eps)
        z0_hat = self.denoiser(z_t, t, self.denoiser(z_t, t).float()).float()  # with self-conditioning
        out = {"diff": ((z0_hat - z0) ** 2).mean().item(),
               # the best input-blind predictor: the batch mean latent
               "diff_trivial": ((z0 - z0.mean(0, keepdim=True)) ** 2).mean().item()}
        out["diff_ratio"] = out["diff"] / max(out["diff_trivial"], 1e-12)
        dec = self._decoder_losses(self.decoder(z0), h, ids, mask)
        out.update({"recon_acc": dec["dec_acc"].item(), "dec_ce": dec["dec_ce"].item(),
                    "dec_mse": dec["dec_mse"].item()})
        m = mask
        out["read_acc"] = (self.readout(h).argmax(-1)[m] == self.readout.to_local(ids)[m]).float().mean().item()
        out.update(collapse_stats(z0))
        return out

    def log_extras(self):
        centres, dens = self.timesteps.density()
        return {"t_density": [round(float(x), 4) for x in dens], "t_centres": [round(float(x), 4) for x in centres]}

    def extra_state(self):
        return {f"timesteps.{k}": v for k, v in self.timesteps.state_dict().items()}

    def load_extra_state(self, state):
        s = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("timesteps.")}
        if s:
            self.timesteps.load_state_dict(s)

    # -- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def decode_latents(self, z0: torch.Tensor, temperature: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        logits = self.readout(self.decoder(z0)).float()
        if temperature <= 0:
            return self.readout.to_global(logits.argmax(-1))
        probs = torch.softmax(logits / temperature, -1).flatten(0, 1)
        local = torch.multinomial(probs.cpu(), 1, generator=generator).view(logits.shape[:2]).to(z0.device)
        return self.readout.to_global(local)

    @torch.no_grad()
    def generate_ids(self, num, sc: SampleConfig, generator, device):
        m = self.cfg.model
        z0 = reverse_diffusion(self.denoiser, self.schedule, (num, m.latent_len, m.latent_dim), sc.steps,
                               sc.solver, sc.noise_scale, generator, device)
        return self.decode_latents(z0, sc.decode_temperature, generator)
