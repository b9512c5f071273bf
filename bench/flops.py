"""FLOPs of one LDLM training step, counted analytically from the config (for MFU).

Only matrix products count (2 FLOPs per multiply-add): every nn.Linear, the attention score and
value products, the readout's product with the frozen word embeddings. Norms, activations, losses,
the optimizer and attention softmax are left out, as MFU conventions do. Backward costs what
autograd computes: the input gradient (if the input needs one) plus the weight gradient (if the
weight is trained), each as much as the forward product, so a trained layer costs 3x its forward,
a trained layer on an input that needs no gradient 2x, a product with frozen weights on the
gradient path 2x; flash attention's recomputation in the backward is not counted (model FLOPs,
not hardware FLOPs). The frozen LM and the self-conditioning pass run forward only.

`FORMULA` is the text printed beside every MFU figure; `ldlm_step_flops` evaluates it.
"""
from __future__ import annotations

FORMULA = """\
Symbols: B sequences per step, L tokens, N latents, d latent width, D frozen-LM width, V readout vocabulary,
M MLP ratio, r = ceil(L/N); widths We/Wd/Wx of encoder/denoiser/decoder, n_enc/n_den/n_dec blocks;
frozen LM: n_lm layers, I its MLP width; T_real real (unpadded) tokens per sequence; p self-conditioning
probability; q = round(B * read_fraction) rows of the read loss. FLOPs = 2 x multiply-adds of matrix products.
Blocks (forward, one sequence; T queries of width W, S context tokens):
  self(T,W)  = 8 T W^2 + 4 T^2 W            q, k, v, out projections + scores and values
  cross(T,S,W) = 4 T W^2 + 4 S W^2 + 4 T S W  q, out + k, v of the context + scores and values
  mlp(T,W)   = 4 M T W^2;  adaLN(W) = 12 W^2 (denoiser only, once per sequence)
Parts (forward, one sequence):
  F_lm  = n_lm (8 L D^2 + 4 L^2 D + 4 L D I) + 2 D^2 (pooler)       [0 when features are cached]
  F_enc = 2 L D We [in] + 2 N r We^2 [patch] + n_enc (self(N,We) + cross(N,L,We) + mlp(N,We)) + 2 N We d
  F_den = 4 N d Wd + 256 Wd + 2 Wd^2 [in, time] + n_den (self(N,Wd) + mlp(N,Wd) + adaLN(Wd)) + 2 N Wd d
  F_dec = 2 N d Wx + 2 N r Wx^2 [unpatch] + n_dec (self(L,Wx) + cross(L,N,Wx) + mlp(L,Wx)) + 2 L Wx D
  F_head(T) = 2 T D^2 (readout MLP);  F_emb(T) = 2 T D V (product with the frozen word embeddings)
Training step (B sequences):
  step = B F_lm + B (3 F_enc - 2 L D We) + B ((3 + p) F_den - 256 Wd) + 3 B F_dec
         + B (3 F_head(T_real) + 2 F_emb(T_real))           decoder's token CE on real tokens
         + q (2 F_head(L) + 2 F_emb(L))                      read loss on the frozen LM's states (mse recipe)
  denoiser alone (forward + backward, no self-conditioning) = B (3 F_den - 256 Wd)
  (-2 L D We, -256 Wd: the first layers of the encoder and the time MLP need no input gradient)
MFU = FLOPs / measured seconds / peak FLOP/s (the GPU's dense bf16 peak, from its datasheet, and the
bf16 matrix-product rate measured on the same device)."""


def _self(T, W):
    return 8 * T * W * W + 4 * T * T * W


def _cross(T, S, W):
    return 4 * T * W * W + 4 * S * W * W + 4 * T * S * W


def _mlp(T, W, M):
    return 4 * M * T * W * W


def ldlm_step_flops(cfg, *, lm_layers: int, lm_hidden: int, lm_intermediate: int, vocab: int,
                    real_tokens: float, batch: int | None = None) -> dict:
    """FLOPs of one training step of an LDLM config (see FORMULA) and its parts.

    lm_*: the frozen LM's shape (its HF config), vocab: the readout vocabulary (corpus subset),
    real_tokens: mean unpadded tokens per sequence, batch: sequences per step (default
    train.batch_size x train.grad_accum)."""
    m, dc, rc, tc = cfg.model, cfg.data, cfg.recipe, cfg.train
    if rc.two_stage > 0:
        raise ValueError("the FLOP count assumes joint training (recipe.two_stage=0)")
    B = batch if batch is not None else tc.batch_size * tc.grad_accum
    L, N, d, D, V, M = dc.seq_len, m.latent_len, m.latent_dim, lm_hidden, vocab, m.mlp_ratio
    r = -(-L // N)
    We, Wd, Wx = m.enc_width, m.den_width, m.dec_width
    f_lm = 0 if dc.cache_features else (
        lm_layers * (8 * L * D * D + 4 * L * L * D + 4 * L * D * lm_intermediate) + 2 * D * D)
    enc_in = 2 * L * D * We
    f_enc = enc_in + 2 * N * r * We * We + m.enc_layers * (_self(N, We) + _cross(N, L, We) + _mlp(N, We, M)) \
        + 2 * N * We * d
    f_den = 4 * N * d * Wd + 256 * Wd + 2 * Wd * Wd + m.den_layers * (_self(N, Wd) + _mlp(N, Wd, M) + 12 * Wd * Wd) \
        + 2 * N * Wd * d
    f_dec = 2 * N * d * Wx + 2 * N * r * Wx * Wx + m.dec_layers * (_self(L, Wx) + _cross(L, N, Wx) + _mlp(L, Wx, M)) \
        + 2 * L * Wx * D

    def head(t):
        return 2 * t * D * D

    def emb(t):
        return 2 * t * D * V

    p = m.self_cond_prob
    q = max(1, round(B * rc.read_fraction)) if rc.decoder_loss == "mse" else 0
    parts = {
        "frozen_lm": B * f_lm,
        "encoder": B * (3 * f_enc - enc_in),
        "denoiser": B * ((3 + p) * f_den - 256 * Wd),
        "decoder": 3 * B * f_dec,
        "readout_decoder": B * (3 * head(real_tokens) + 2 * emb(real_tokens)),
        "readout_read": q * (2 * head(L) + 2 * emb(L)),
    }
    total = sum(parts.values())
    return {"step": total, "per_token": total / (B * L), "parts": parts, "batch": B,
            "forward_per_sequence": {"frozen_lm": f_lm, "encoder": f_enc, "denoiser": f_den, "decoder": f_dec},
            "denoiser_alone": B * (3 * f_den - 256 * Wd), "denoiser_share": parts["denoiser"] / total,
            "symbols": {"B": B, "L": L, "N": N, "d": d, "D": D, "V": V, "M": M, "r": r, "We": We, "Wd": Wd, "Wx": Wx,
                        "n_enc": m.enc_layers, "n_den": m.den_layers, "n_dec": m.dec_layers, "n_lm": lm_layers,
                        "I": lm_intermediate, "T_real": real_tokens, "p": p, "q": q,
                        "features_cached": dc.cache_features}}


def model_flops(model, batch: int | None = None) -> dict:
    """`ldlm_step_flops` for a built LDLM (after `prepare`): reads the frozen LM's shape, the
    readout vocabulary and the mean real tokens per training sequence off the model."""
    lmc = model.frozen.lm.config
    mask = model.splits["train"].mask
    return ldlm_step_flops(model.cfg, lm_layers=lmc.num_hidden_layers, lm_hidden=lmc.hidden_size,
                           lm_intermediate=lmc.intermediate_size, vocab=int(model.readout.allowed.sum()),
                           real_tokens=float(mask.float().sum(1).mean()), batch=batch)
