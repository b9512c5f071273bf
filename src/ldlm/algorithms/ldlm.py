"""LDLM: latent encoder, diffusion model and decoder trained jointly, in one loop.

Data flow of one step (docs/design.md):
    x -> frozen LM -> h -> encoder -> z0 -> z_t = alpha z0 + sigma eps -> denoiser -> z0_hat
                                       z0 -> (decoder-input noise) -> latent decoder -> h_hat
                                       h_hat (stopgrad) and h -> token decoder -> readout -> logits
Loss (recipe.decoder_loss = 'mse', the paper's):
    w(step)-scaled L_diff + lambda_dec ||h_hat - h||^2 + lambda_ce CE(tok(sg(h_hat)), x) + lambda_read CE(tok(h), x)

Conditioning (prompts, suffixes; docs/design.md): a share `recipe.cond_prob` of the training sequences get a
random prefix, suffix or both given. The given tokens alone go through the frozen LM and the encoder
(no gradient, inference statistics: exactly what sampling will do with a prompt), and every latent whose
whole window of ceil(L/N) positions is given is put in clean, marked by the denoiser's `given_flag`;
L_diff is taken on the other latents only. At sampling the same latents are clamped at every step, and
after decoding the given tokens overwrite their positions: a window the prompt covers only in part is
generated, not clamped, so the prompt is still honoured token for token.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..autoencoder import LatentDecoder, LatentEncoder, Readout, TokenDecoder
from ..conditioning import Given
from ..config import Config, SampleConfig, schedule_horizon
from ..data import Corpus
from ..denoiser import ClampedDenoiser, Denoiser, init_from_lm
from ..errors import UserError
from ..features import CorpusFeatures
from ..frozen_lm import FrozenLM
from ..recipe import decoder_input_noise, gaussian_input_noise, mix_gradient, warmup_weight
from ..sampling import reverse_diffusion
from ..schedules import make_schedule
from ..timesteps import make_timesteps
from .ar import sample_tokens
from .base import Algorithm

# noise levels at which validation reports the denoising error as a share of the mean predictor's
DIAG_ALPHAS = (0.8, 0.5, 0.3, 0.2)


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


def sampled_softmax(target: torch.Tensor, vocab: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates of a sampled softmax: (sorted local ids [C], the log-Q correction [C] to subtract from their logits).

    The candidates are every target of the batch (taken with certainty: q = 1, no correction) and k tokens drawn
    uniformly with replacement from the rest of the vocabulary (kept once each, q = 1 - (1 - 1/(V - T))^k, the
    chance a given one is drawn). Subtracting log q makes sum_c exp(logit_c - log q_c) an unbiased estimate of the
    full softmax's normaliser, so the CE over the candidates estimates the full CE (Jean et al. 2015; Bengio &
    Senecal 2008), at the cost of C instead of V logits per position. Draws from the global RNG."""
    is_target = torch.zeros(vocab, dtype=torch.bool, device=target.device)
    is_target[target] = True
    rest = (~is_target).nonzero().squeeze(1)
    if rest.numel() == 0 or k == 0:
        cand = is_target.nonzero().squeeze(1)
        return cand, torch.zeros(cand.shape, device=target.device)
    drawn = rest[torch.randint(rest.numel(), (k,), device=target.device)]
    is_neg = torch.zeros_like(is_target)
    is_neg[drawn] = True
    cand = (is_target | is_neg).nonzero().squeeze(1)
    q = -torch.expm1(k * torch.log1p(torch.tensor(-1.0 / rest.numel(), device=target.device)))
    return cand, torch.where(is_target[cand], 0.0, torch.log(q))


def cut_after_end(ids: torch.Tensor, end: int, pad: int, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids with every position after the first `end` token at or after `start` [B] set to `pad`, the mask of the
    positions kept): a sample's text stops at its first [SEP], so the encoder should see no more than that."""
    L = ids.shape[1]
    pos = torch.arange(L, device=ids.device).expand_as(ids)
    is_end = (ids == end) & (pos >= start[:, None])
    first = torch.where(is_end.any(1), torch.where(is_end, pos, L).amin(1), L - 1)
    mask = pos <= first[:, None]
    return torch.where(mask, ids, pad), mask


class RoundedDenoiser:
    """The denoiser as `reverse_diffusion` calls it, with each estimate of z0 at a step that starts below time
    `below` replaced by `model.round_latents` of it: the latent of the text it reads out as, so the sampler goes
    on from a point the encoder can produce rather than from a posterior mean that blends several texts
    (Diffusion-LM's rounding to the nearest word embedding, on the learned latent space). With `temperature` > 0
    the text is sampled from the readout at that temperature instead of taken by argmax. The condition's latents,
    if any, stay clamped. Costs a latent-decoder, readout, frozen-LM and encoder pass per rounded step."""

    def __init__(self, model: "LDLM", denoiser, below: float, given: Given | None = None,
                 temperature: float = 0.0, generator: torch.Generator | None = None, **readout):
        self.model, self.denoiser, self.below, self.given = model, denoiser, below, given
        self.temperature, self.generator, self.readout = temperature, generator, readout

    def __call__(self, z, t, z_sc=None):
        z0 = self.denoiser(z, t, z_sc).float()
        if float(t.max()) >= self.below:
            return z0
        z0r = self.model.round_latents(z0, self.given, self.temperature, self.generator, **self.readout)
        return self.denoiser.clamp(z0r) if isinstance(self.denoiser, ClampedDenoiser) else z0r


class MeanGuidance:
    """The denoiser as `reverse_diffusion` calls it, with each estimate of z0 pushed away from the mean latent:
    z0 + g (z0 - 0), 0 being the normalised latents' centre -- classifier-free guidance's form with the latent every
    text shares standing in for the unconditional prediction (the readout contrast's idea, on the latents). Not at
    the steps that start below `below`: there the sampler goes on from a rounded latent (`RoundedDenoiser`), which is
    the encoding of a real text already. A condition's latents stay clamped."""

    def __init__(self, denoiser, weight: float, below: float = 0.0, clamp=None):
        self.denoiser, self.weight, self.below, self.clamp = denoiser, weight, below, clamp

    def __call__(self, z, t, z_sc=None):
        z0 = self.denoiser(z, t, z_sc).float()
        if float(t.max()) < self.below:
            return z0
        z0 = (1.0 + self.weight) * z0
        return z0 if self.clamp is None else self.clamp(z0)


class LDLM(Algorithm):
    name = "ldlm"

    def __init__(self, cfg: Config, tokenizer):
        super().__init__(cfg, tokenizer)
        m, L = cfg.model, cfg.data.seq_len
        self.frozen = FrozenLM(m.lm, m.lm_layer)
        if L > self.frozen.max_positions:
            raise UserError(f"data.seq_len={L} is longer than the frozen LM's {self.frozen.max_positions} "
                            f"positions; use data.seq_len<={self.frozen.max_positions}")
        if m.tok_dec_masked and tokenizer.mask_token_id is None:
            raise UserError(f"model.tok_dec_masked=true needs a [MASK] token, which {m.lm}'s tokenizer lacks; "
                            "set it to false or use a BERT-family frozen LM")
        D = self.frozen.hidden
        # registration order = parameter order = the optimizer state's order in checkpoints: keep it
        self.encoder = self.build_encoder(m, L, D)
        n, d = self.latent_shape()
        self.schedule = make_schedule(m.schedule, m.schedule_d)  # not a module: the parameter order is unchanged
        lm_heads = getattr(self.frozen.lm.config, "num_attention_heads", m.heads)
        heads = m.den_heads or (lm_heads if m.den_init == "lm" else m.heads)
        self.denoiser = Denoiser(n, d, m.den_width, m.den_layers, heads, m.mlp_ratio, m.dropout,
                                 m.prediction, self.schedule)
        if m.den_init == "lm":
            init_from_lm(self.denoiser, self.frozen.blocks(), lm_heads, m.lm)
        self.decoder = self.build_decoder(m, L, D)
        self.tok_decoder = TokenDecoder(D, L, m.tok_dec_layers, m.tok_dec_width, m.heads, m.mlp_ratio, m.dropout,
                                        m.tok_dec_causal, m.tok_dec_masked)
        self.readout = Readout(D, self.vocab_size, m.readout, self.frozen.word_embeddings(),
                               unk_id=tokenizer.unk_token_id or 0)
        self.timesteps = make_timesteps(cfg.recipe)
        self.features: CorpusFeatures | None = None
        self._last_z0: torch.Tensor | None = None  # latents of the last training batch, for interval logs

    def build_encoder(self, m, L: int, D: int) -> torch.nn.Module:
        """The trainable latent encoder: LM states [B, L, D] -> latents [B, N, d]."""
        return LatentEncoder(D, L, m.latent_len, m.latent_dim, m.enc_width, m.enc_layers, m.heads,
                             m.mlp_ratio, m.dropout, m.latent_norm)

    def build_decoder(self, m, L: int, D: int) -> torch.nn.Module:
        """The trainable latent decoder: latents [B, N, d] -> LM states [B, L, D]."""
        return LatentDecoder(D, L, m.latent_len, m.latent_dim, m.dec_width, m.dec_layers, m.heads,
                             m.mlp_ratio, m.dropout)

    def latent_shape(self) -> tuple[int, int]:
        """(N, d): the shape of one sequence's latents, which the denoiser generates."""
        return self.cfg.model.latent_len, self.cfg.model.latent_dim

    def latent_window(self) -> int:
        """Token positions per latent: latent n covers positions [n r, (n + 1) r) (see autoencoder.to_windows)."""
        return -(-self.cfg.data.seq_len // self.latent_shape()[0])

    # -- data -----------------------------------------------------------------------------
    def prepare(self, corpus: Corpus, device, rows: dict | None = None) -> None:
        super().prepare(corpus, device, rows)
        if self.cfg.model.readout_vocab == "corpus":
            specials = [i for i in (self.tokenizer.pad_token_id, self.tokenizer.cls_token_id,
                                    self.tokenizer.sep_token_id) if i is not None]
            self.readout.set_vocab(torch.unique(corpus.train.ids), always=tuple(specials))
        self.features = CorpusFeatures(self.frozen, corpus, self.cfg.data, device, rows,
                                       pad_zero=not self.reads_padding_states())
        # per-dimension normalisation of the features, fitted on the training split (saved with the model)
        self.frozen.fit_normalisation(*self.features.normalisation_sample(corpus, device))

    def reads_padding_states(self) -> bool:
        """Whether the frozen LM's states at padding positions reach the model. The encoder masks them, the
        decoder's losses and the readout score real positions only, and a causal token decoder's real positions
        attend only to earlier ones; a bidirectional token decoder (plain or masked) attends to all of them.
        Where they are not read, the feature pass skips them (`features.compute_features`, `pad_zero`)."""
        return self.tok_decoder.layers > 0 and not self.tok_decoder.causal

    def get_batch(self, split, idx, device):
        batch = super().get_batch(split, idx, device)
        batch["h"] = self.frozen.normalise(self.features.raw(split, idx, batch["ids"], batch["mask"]))
        return batch

    # -- the three parts of the model -----------------------------------------------------
    def encode(self, h: torch.Tensor, mask: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Normalised latents z0 [B, N, d] (float32). `frozen`: no gradient, running latent statistics
        (two-stage training's stage 2, and everywhere the encoder is used for inference)."""
        if not frozen:
            return self.encoder(h, mask).float()
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            z0 = self.encoder(h, mask).float()
        self.encoder.train(was_training)
        return z0

    def token_logits(self, h: torch.Tensor, mask: torch.Tensor | None = None,
                     local: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [B, L, D] -> token logits over the readout vocabulary ([B, L, V], or [n, V] at `mask`);
        over its local ids `local` only, if given. A causal token decoder also reads the tokens `ids` [B, L]
        (teacher forcing: position i sees ids[:, :i]); a masked one reads `ids` as its draft (tokens or [MASK])."""
        if self.tok_decoder.causal:
            r = self.tok_decoder(h, self.previous_embeddings(ids))
        elif self.tok_decoder.masked:
            r = self.tok_decoder(h, self.frozen.word_embeddings()[ids])
        else:
            r = self.tok_decoder(h)
        return self.readout(r if mask is None else r[mask], local).float()

    def previous_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, L, D]: at each position the frozen LM's word embedding of the token before it
        ([PAD]'s before the first), the causal token decoder's input besides h."""
        prev = torch.cat([torch.full_like(ids[:, :1], self.tokenizer.pad_token_id), ids[:, :-1]], 1)
        return self.frozen.word_embeddings()[prev]

    def masked_draft(self, ids: torch.Tensor, mask: torch.Tensor,
                     partial: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(draft, scored) for a masked token decoder's CE; position 0 ([CLS]) is shown, as in decoding. Training
        (`partial`): each row hides a share r = cos(pi/2 u), u ~ U(0, 1), of the other positions behind [MASK] (one
        at least; the shares that decoding's cosine schedule leaves hidden) and is scored on all it hides -- the
        [SEP] and [PAD]s after the passage too, which decoding from an all-[MASK] draft has to write itself.
        Otherwise every other position is hidden and the passage's tokens are scored: the first pass of decoding,
        a parallel readout."""
        b, L = ids.shape
        masked = torch.full_like(ids, self.tokenizer.mask_token_id)
        masked[:, 0] = ids[:, 0]
        if not (self.training and partial):
            return masked, mask
        share = torch.cos(math.pi / 2 * torch.rand(b, 1, device=ids.device))
        hide = torch.rand(b, L, device=ids.device) < share
        hide[torch.arange(b, device=ids.device), torch.randint(1, L, (b,), device=ids.device)] = True
        hide[:, 0] = False
        return torch.where(hide, masked, ids), hide

    def _token_ce(self, h: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, accuracy: bool = True,
                  partial: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CE and accuracy (None unless `accuracy`) of the token decoder on the real tokens ([CLS] ... [SEP]).

        Positions after [SEP] are left out: a sample is cut at its first [SEP], so what the decoder
        puts after it never reaches text, and the vocabulary-wide softmax there would be wasted work.
        In training with recipe.softmax_negatives = K > 0 the softmax is a sampled one (`sampled_softmax`),
        and accuracy, which would be over the sampled candidates only, is not reported (None). A masked token
        decoder reads a draft and is scored where `masked_draft` (`partial`) says."""
        read = ids  # what a causal or masked token decoder reads besides h
        if self.tok_decoder.masked:
            read, mask = self.masked_draft(ids, mask, partial)
        target = self.readout.to_local(ids[mask])
        k = self.cfg.recipe.softmax_negatives
        if self.training and k > 0:
            cand, correction = sampled_softmax(target, self.readout.vocab_ids().numel(), k)
            logits = self.token_logits(h, mask, cand, read) - correction
            return F.cross_entropy(logits, torch.searchsorted(cand, target)), None
        logits = self.token_logits(h, mask, ids=read)
        acc = (logits.argmax(-1) == target).float().mean() if accuracy else None
        return F.cross_entropy(logits, target), acc

    # -- conditioning ---------------------------------------------------------------------
    def given_latents(self, given_tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] given token positions -> [B, N] latents whose whole window is given."""
        b, L = given_tokens.shape
        n, r = self.latent_shape()[0], self.latent_window()
        full = torch.ones(b, n * r, dtype=torch.bool, device=given_tokens.device)  # past L counts as given
        full[:, :L] = given_tokens
        return full.view(b, n, r).all(-1)

    def condition_latents(self, given: Given) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_given [B, N, d], given [B, N]): the given tokens alone through the frozen LM and the encoder
        (no gradient, inference statistics), and which latents they fix."""
        seen = given.mask & (given.ids != self.tokenizer.pad_token_id)
        z = self.encode(self.frozen.features(given.ids, seen), seen, frozen=True)
        return z, self.given_latents(given.mask)

    def training_condition(self, ids: torch.Tensor, mask: torch.Tensor) -> Given | None:
        """For a share recipe.cond_prob of the rows, a random prefix, suffix or both given (token level,
        so a cut inside a window happens as at sampling); None when no row is picked. Draws from the
        global RNG, which the trainer seeds per micro-batch, and draws nothing when cond_prob = 0."""
        p = self.cfg.recipe.cond_prob
        if p <= 0:
            return None
        b, L = ids.shape
        pick, kind, u = torch.rand(b) < p, torch.randint(0, 3, (b,)), torch.rand(b, 2)
        lengths = mask.sum(1).tolist()  # real tokens: [CLS] ... [SEP]
        g = torch.zeros(b, L, dtype=torch.bool)
        for i in pick.nonzero().flatten().tolist():
            n, k = lengths[i], int(kind[i])
            if k == 2 and n < 5 or k == 1 and n < 4:
                k = 0
            if n < 3:
                continue
            if k == 0:  # prefix [0, a): at least one real token given, at least [SEP] left to write
                g[i, : 2 + int(u[i, 0] * (n - 2))] = True
            elif k == 1:  # [CLS] and a suffix [s, L) with at least one real token before [SEP]
                g[i, 0] = True
                g[i, 2 + int(u[i, 0] * (n - 3)):] = True
            else:  # prefix [0, a) and suffix [s, L), at least one token between them
                a = 2 + int(u[i, 0] * (n - 4))
                g[i, :a] = True
                g[i, a + 1 + int(u[i, 1] * (n - 3 - a)):] = True
        if not g.any():
            return None
        g = g.to(ids.device)
        return Given(torch.where(g, ids, self.tokenizer.pad_token_id), g)

    def conditioned(self, z0: torch.Tensor, given: Given | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(z_given, given latents) for a batch, computed on the rows that have a condition only."""
        if given is None:
            return None
        rows = given.mask.any(1).nonzero().flatten()
        z_r, g_r = self.condition_latents(Given(given.ids[rows], given.mask[rows]))
        z_given = torch.zeros_like(z0)
        z_given[rows] = z_r.to(z0.dtype)
        glat = torch.zeros(z0.shape[:2], dtype=torch.bool, device=z0.device)
        glat[rows] = g_r
        return z_given, glat

    # -- losses ---------------------------------------------------------------------------
    def diffusion_loss(self, z0: torch.Tensor, w: float, cond=None) -> tuple[torch.Tensor, dict]:
        """x0-prediction MSE at t from the timestep sampler; its gradient into the encoder scaled by w.
        `cond` = (z_given, given [B, N]): those latents go in clean and carry no loss. With recipe.diff_repeats
        = k > 1 each sequence's latents are noised k times (k draws of t and eps) and the loss is the mean
        over all B k of them, so its scale, and the encoder's share of it, are those of one draw."""
        z0_diff = mix_gradient(z0, w)
        k = self.cfg.recipe.diff_repeats
        if k > 1:
            z0_diff = z0_diff.repeat_interleave(k, 0)
            if cond is not None:
                cond = tuple(c.repeat_interleave(k, 0) for c in cond)
        target = z0_diff.detach() if self.cfg.recipe.diff_target_stopgrad else z0_diff
        t = self.timesteps.sample(z0_diff.shape[0], device=z0.device)
        z_t = self.schedule.noise(z0_diff, t)
        given = None
        if cond is not None:
            z_given, given = cond
            z_t = torch.where(given.unsqueeze(-1), z_given, z_t)
        z_sc = None
        if torch.rand(()) < self.cfg.model.self_cond_prob:
            with torch.no_grad():
                z_sc = self.denoiser(z_t, t, None, given).float()
            if cond is not None:
                z_sc = torch.where(given.unsqueeze(-1), z_given, z_sc)
        z0_hat = self.denoiser(z_t, t, z_sc, given).float()
        if cond is None:
            per_sample = ((z0_hat - target) ** 2).mean(dim=(1, 2))
            self.timesteps.update(t, per_sample)
        else:
            free = (~given).float()
            per_sample = (((z0_hat - target) ** 2).mean(-1) * free).sum(1) / free.sum(1).clamp_min(1.0)
            plain = ~given.any(1)  # the timestep sampler follows the unconditional loss only
            if plain.any():
                self.timesteps.update(t[plain], per_sample[plain])
        l_diff = per_sample.mean()
        return l_diff, {"diff": l_diff.detach(), "w_enc": w}

    def decoder_loss(self, z0: torch.Tensor, h, ids, mask) -> tuple[torch.Tensor, dict]:
        """Latent decoder on noised latents, token decoder on its output and on the true states."""
        rc = self.cfg.recipe
        if rc.dec_noise == "gaussian":
            z_dec = gaussian_input_noise(z0, rc.dec_noise_std)
        else:
            z_dec = decoder_input_noise(z0, self.schedule, rc.dec_noise_max)
        h_hat = self.decoder(z_dec).float()
        mse = ((h_hat[mask] - h[mask]) ** 2).mean()
        # 'mse': the token loss reaches only the token decoder (stopgrad), so it cannot shape the latents
        shaping = rc.decoder_loss != "mse"
        masked = self.tok_decoder.masked
        # a masked token decoder: the CE that reaches the latents is its first pass's (an all-[MASK] draft, the
        # parallel readout's pressure) -- with partial drafts the text's context stands in for the latents, and they
        # carry less (session 23); reading a partial draft is learned on stopgrad(h_hat) below
        ce, acc = self._token_ce(h_hat if shaping else h_hat.detach(), ids, mask, accuracy=self.step_logs,
                                 partial=not (masked and shaping))
        loss = rc.lambda_ce * ce
        logs = {"dec_mse": mse.detach(), "dec_ce": ce.detach()}
        if masked and shaping:
            draft_ce, _ = self._token_ce(h_hat.detach(), ids, mask, accuracy=False)
            loss = loss + rc.lambda_ce * draft_ce
            logs["draft_ce"] = draft_ce.detach()
        if acc is not None:
            logs["dec_acc"] = acc.detach()
        if rc.decoder_loss != "ce":
            loss = loss + rc.lambda_dec * mse
            # the token decoder also reads the frozen LM's own states, which anchors it to the LM's space
            # (optionally on part of the batch: the vocabulary-wide softmax is the most expensive op)
            q = max(1, round(ids.shape[0] * rc.read_fraction))
            l_read, _ = self._token_ce(h[:q], ids[:q], mask[:q], accuracy=False)
            loss = loss + rc.lambda_read * l_read
            logs["read_ce"] = l_read.detach()
        return loss, logs

    def loss(self, batch, step):
        rc = self.cfg.recipe
        ids, mask, h = batch["ids"], batch["mask"], batch["h"]
        stage = self.stage(step)
        z0 = self.encode(h, mask, frozen=stage == 2)
        self._last_z0 = z0.detach()
        loss = torch.zeros((), device=ids.device)
        logs: dict = {"stage": stage} if stage else {}
        if stage != 1:
            cond = self.conditioned(z0, self.training_condition(ids, mask))
            l_diff, d_logs = self.diffusion_loss(z0, warmup_weight(step, self.schedule_steps(), rc), cond)
            loss = loss + l_diff
            logs.update(d_logs)
        if stage != 2:
            l_dec, d_logs = self.decoder_loss(z0, h, ids, mask)
            loss = loss + l_dec
            logs.update(d_logs)
        logs["loss"] = loss.detach()
        return loss, logs

    def stage(self, step: int) -> int:
        """0: joint training; 1: the autoencoder alone (two-stage's first stage); 2: the denoiser alone on
        frozen latents (two-stage's second stage, or the last `recipe.denoiser_tail` of a joint run)."""
        rc, horizon = self.cfg.recipe, self.schedule_steps()
        if rc.two_stage > 0:  # TEncDM/COSMOS
            return 1 if step < rc.two_stage * horizon else 2
        return 2 if rc.denoiser_tail > 0 and step >= (1.0 - rc.denoiser_tail) * horizon else 0

    def schedule_steps(self) -> int:
        """The step count that the recipe's warmup and two-stage boundaries are fractions of: the run's
        horizon, fixed when it starts (extending train.steps on resume does not move them)."""
        return schedule_horizon(self.cfg.train)

    def on_optimizer_step(self) -> None:
        self.timesteps.step()

    def interval_logs(self) -> dict:
        # an SVD: once per log interval, not per step
        return collapse_stats(self._last_z0) if self._last_z0 is not None else {}

    @torch.no_grad()
    def evaluate(self, batch, generator):
        """Held-out diffusion loss on a stratified t grid and its trivial-predictor reference; the
        denoising error as a share of the mean predictor's at fixed noise levels (DIAG_ALPHAS);
        reconstruction accuracy of decode(encode(x)) (a causal token decoder's is teacher-forced: each position
        given the true tokens before it)."""
        ids, mask, h = batch["ids"], batch["mask"], batch["h"]
        b = ids.shape[0]
        z0 = self.encode(h, mask, frozen=True)
        trivial = ((z0 - z0.mean(0, keepdim=True)) ** 2).mean().item()  # the best input-blind predictor

        def denoise_error(t, cond=None, on=None):
            eps = torch.randn(z0.shape, generator=generator).to(z0.device)
            z_t = self.schedule.noise(z0, t, eps)
            den = self.denoiser if cond is None else ClampedDenoiser(self.denoiser, *cond)
            z0_hat = den(z_t, t, den(z_t, t).float()).float()  # with self-conditioning
            err = (z0_hat - z0) ** 2
            return (err.mean() if on is None else err[:, on].mean()).item()

        t = ((torch.arange(b) + torch.rand(b, generator=generator)) / b).clamp(self.cfg.recipe.t_min, 1.0)
        out = {"diff": denoise_error(t.to(ids.device)), "diff_trivial": trivial}
        if self.cfg.recipe.cond_prob > 0:
            # the second half of the latents, with the first half's tokens given vs nothing given
            # (the same noise): below 1 when the model uses a prompt
            n, r = self.latent_shape()[0], self.latent_window()
            g = torch.zeros_like(mask)
            g[:, : r * (n // 2)] = True
            cond = self.condition_latents(Given(torch.where(g, ids, self.tokenizer.pad_token_id), g))
            on = torch.arange(n, device=ids.device) >= n // 2
            state = generator.get_state()
            with_prompt = denoise_error(t.to(ids.device), cond, on)
            generator.set_state(state)
            out["diff_cond_ratio"] = with_prompt / max(denoise_error(t.to(ids.device), None, on), 1e-12)
        out["diff_ratio"] = out["diff"] / max(trivial, 1e-12)
        for a, ta in zip(DIAG_ALPHAS, self.schedule.t_at_alpha(list(DIAG_ALPHAS)).tolist()):
            out[f"den_ratio_a{round(a * 100):02d}"] = denoise_error(torch.full((b,), ta, device=ids.device)) / max(trivial, 1e-12)
        h_hat = self.decoder(z0).float()
        ce, acc = self._token_ce(h_hat, ids, mask)
        out.update({"recon_acc": acc.item(), "dec_ce": ce.item(),
                    "dec_mse": ((h_hat[mask] - h[mask]) ** 2).mean().item()})
        _, read_acc = self._token_ce(h, ids, mask)
        out["read_acc"] = read_acc.item()
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
    def decode_latents(self, z0: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None,
                       contrast: float = 0.0, stop_mass: float = 0.0, given: Given | None = None,
                       iters: int | None = None, lexicon_beam: int = 0) -> torch.Tensor:
        """Token ids [B, L] of latents z0: argmax of the readout, or sampled at `temperature` > 0.

        `contrast` c > 0 scores log p(token | z0) - c log p(token | 0), the second term being what the decoder
        writes for the mean latent (the normalised latents' centre), so tokens it writes for any latent lose
        ground to the ones this latent asks for (a PMI readout; the end tokens are not penalised). `stop_mass` m > 0
        decides the end apart from the word: a position is [SEP] when [SEP] and [PAD] together hold probability
        >= m, else the best (or a sampled) other token -- with argmax over the whole vocabulary one end token
        wins against many words that share the rest of the mass. `given`: a condition's tokens, which a causal
        token decoder writes in place and reads on from (the parallel readout's are put in by the caller). `iters`:
        a masked token decoder's passes (default: the config's sample.decode_iters). `lexicon_beam` k > 0: the
        readout decoded so that every word is one of the training split's (`lexicon.Lexicon.decode`, beam k); the
        `given` tokens are written in its search."""
        if self.tok_decoder.causal or self.tok_decoder.masked:
            if lexicon_beam > 0:
                raise UserError("sample.lexicon acts on a parallel readout; with a causal or masked token "
                                "decoder set it to false")
            if contrast > 0 or stop_mass > 0:
                kind = "causal" if self.tok_decoder.causal else "masked"
                raise UserError("sample.readout_contrast and sample.stop_mass act on a one-pass readout; with "
                                f"model.tok_dec_{kind}=true set them to 0")
            h = self.decoder(z0).float()
            if self.tok_decoder.causal:
                return self.decode_left_to_right(h, temperature, generator, given)
            return self.decode_masked(h, iters or self.cfg.sample.decode_iters, temperature, generator, given)
        score = self.token_logits(self.decoder(z0).float())
        if lexicon_beam > 0:
            if stop_mass > 0:
                raise UserError("sample.stop_mass and sample.lexicon both decide where the passage ends; set "
                                "sample.stop_mass to 0 or sample.lexicon to false")
            score = torch.log_softmax(score, -1)
            if contrast > 0:
                score = score - contrast * self._contrast_prior(z0)
            forced = None if given is None else (given.mask.to(score.device),
                                                 self.readout.to_local(given.ids.to(score.device)))
            local = self.lexicon().decode(score, lexicon_beam, temperature, generator, forced=forced)
            return self.readout.to_global(local)
        ends = None
        if contrast > 0 or stop_mass > 0:
            score = torch.log_softmax(score, -1)
            stop = self.readout.to_local(torch.tensor([self.tokenizer.sep_token_id, self.tokenizer.pad_token_id],
                                                      device=score.device))
            if stop_mass > 0:  # decided on the plain probabilities, before the word is chosen
                ends = score[..., stop].exp().sum(-1) >= stop_mass
                score = score.index_fill(-1, stop, float("-inf"))
            if contrast > 0:
                score = score - contrast * self._contrast_prior(z0)
        if temperature <= 0:
            local = score.argmax(-1)
        else:
            probs = torch.softmax(score / temperature, -1).flatten(0, 1)
            local = torch.multinomial(probs.cpu(), 1, generator=generator).view(score.shape[:2]).to(z0.device)
        if ends is not None:
            local = torch.where(ends, stop[0], local)
        return self.readout.to_global(local)

    def _contrast_prior(self, z0: torch.Tensor) -> torch.Tensor:
        """log p(token | the mean latent) [1, L, V], 0 at the end tokens (the readout contrast does not penalise them)."""
        stop = self.readout.to_local(torch.tensor([self.tokenizer.sep_token_id, self.tokenizer.pad_token_id],
                                                  device=z0.device))
        prior = torch.log_softmax(self.token_logits(self.decoder(torch.zeros_like(z0[:1])).float()), -1)
        return prior.index_fill(-1, stop, 0.0)

    @torch.no_grad()
    def decode_left_to_right(self, h: torch.Tensor, temperature: float = 0.0,
                             generator: torch.Generator | None = None, given: Given | None = None) -> torch.Tensor:
        """Token ids [B, L] from the latent decoder's states h [B, L, D] through the causal token decoder, one
        position at a time (KV-cached): [CLS] first, then argmax or a sample at `temperature` > 0 (inverse-CDF
        from `generator`, as AR's tokens); `given` tokens are written where it gives them and read on from.
        Positions after the first [SEP] are decoded too and cut later, as with the parallel readout."""
        b, L, _ = h.shape
        emb = self.frozen.word_embeddings()
        ids = torch.full((b, L), self.tokenizer.cls_token_id, dtype=torch.long, device=h.device)
        prev = torch.full((b, 1), self.tokenizer.pad_token_id, dtype=torch.long, device=h.device)
        caches = self.tok_decoder.new_caches()
        for i in range(L):
            r = self.tok_decoder(h[:, i:i + 1], emb[prev], caches, start=i)
            if i > 0:  # position 0 is [CLS] in every passage; it still goes through the caches
                local = sample_tokens(self.readout(r[:, 0]).float(), temperature, 1.0, generator)
                ids[:, i] = self.readout.to_global(local)
            if given is not None:
                ids[:, i] = torch.where(given.mask[:, i], given.ids[:, i], ids[:, i])
            prev = ids[:, i:i + 1]
        return ids

    @torch.no_grad()
    def decode_masked(self, h: torch.Tensor, iters: int, temperature: float = 0.0,
                      generator: torch.Generator | None = None, given: Given | None = None) -> torch.Tensor:
        """Token ids [B, L] from the latent decoder's states h [B, L, D] through the masked token decoder in `iters`
        parallel passes (mask-predict, MaskGIT's cosine schedule): the draft starts as [CLS] and [MASK]s (and the
        `given` tokens); each pass reads the draft, proposes a token at every hidden position (argmax, or sampled
        at `temperature` > 0) and writes the ones it gives the most probability to, so that after pass k a share
        cos(pi/2 k / iters) of the free positions is still hidden and none after the last. Written tokens stay."""
        b, L, _ = h.shape
        emb = self.frozen.word_embeddings()
        ids = torch.full((b, L), self.tokenizer.mask_token_id, dtype=torch.long, device=h.device)
        ids[:, 0] = self.tokenizer.cls_token_id
        if given is not None:
            ids = torch.where(given.mask, given.ids, ids)
        hidden = ids == self.tokenizer.mask_token_id
        free = hidden.sum(1, keepdim=True)
        for k in range(1, iters + 1):
            r = self.tok_decoder(h, emb[ids])
            logp = torch.log_softmax(self.readout(r[hidden]).float(), -1)  # the hidden positions only: [n, V]
            local = sample_tokens(logp, temperature, 1.0, generator)
            score = torch.full((b, L), float("inf"), device=h.device)
            score[hidden] = logp.gather(-1, local.unsqueeze(-1)).squeeze(-1)
            proposal = ids.clone()
            proposal[hidden] = self.readout.to_global(local)
            keep = (free.float() * math.cos(math.pi / 2 * k / iters)).floor().long()  # stay hidden after pass k
            rank = score.argsort(1).argsort(1)  # the hidden positions by their proposal's probability, least sure first
            write = hidden & (rank >= keep)
            ids = torch.where(write, proposal, ids)
            hidden = hidden & ~write
        return ids

    @torch.no_grad()
    def reconstruct_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) by argmax [B, L]: what the autoencoder alone gives back -- the ceiling of
        any sample, since every sample goes through the same decoder."""
        return self.decode_latents(self.encode(self.frozen.features(ids, mask), mask, frozen=True))

    @torch.no_grad()
    def round_latents(self, z0: torch.Tensor, given: Given | None = None, temperature: float = 0.0,
                      generator: torch.Generator | None = None, **readout) -> torch.Tensor:
        """The latents of the text that `z0` reads out as: argmax tokens, or tokens sampled at `temperature` > 0
        (a condition's own tokens where it gives them), cut after the first [SEP] past the condition, through the
        frozen LM and the encoder again. `readout`: `decode_latents`'s contrast and stop_mass."""
        ids = self.decode_latents(z0, temperature, generator, given=given, **readout)
        last_given = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        if given is not None:
            ids = torch.where(given.mask, given.ids, ids)
            pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
            last_given = torch.where(given.mask, pos, -1).amax(1).clamp_min(0)
        ids, mask = cut_after_end(ids, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id, last_given)
        return self.encode(self.frozen.features(ids, mask), mask, frozen=True)

    @torch.no_grad()
    def generate_ids(self, num, sc: SampleConfig, generator, device, callback=None, given: Given | None = None):
        """[num, L] token ids; with `given`, its latents clamped and its tokens kept (module docstring)."""
        den, clamp = self.denoiser, None
        if given is not None:
            given = given.to(device)
            den = ClampedDenoiser(self.denoiser, *self.condition_latents(given), guidance=sc.guidance)
            clamp = den.clamp
        readout = {"contrast": sc.readout_contrast, "stop_mass": sc.stop_mass, "iters": sc.decode_iters,
                   "lexicon_beam": sc.lexicon_beam if sc.lexicon else 0}
        if sc.round_below > 0:
            # the rounding readout reads the plain estimate; the guidance acts on the steps above it
            den = RoundedDenoiser(self, den, sc.round_below, given, sc.round_temperature, generator, **readout)
        if sc.mean_guidance > 0:
            den = MeanGuidance(den, sc.mean_guidance, sc.round_below, clamp)
        z0 = reverse_diffusion(den, self.schedule, (num, *self.latent_shape()), sc.steps,
                               sc.solver, sc.noise_scale, generator, device, grid=sc.grid, callback=callback)
        ids = self.decode_latents(z0, sc.decode_temperature, generator, given=given, **readout)
        return ids if given is None else torch.where(given.mask, given.ids, ids)

    def trajectory_ids(self, state):
        """The step's z0 estimate, read out by argmax (the text the model 'sees' at that step)."""
        return self.decode_latents(state)
