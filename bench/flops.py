"""FLOPs of one LDLM training step, counted analytically from the config (for MFU).

Only matrix products count (2 FLOPs per multiply-add): every nn.Linear, the attention score and
value products, the readout's product with the frozen word embeddings. Norms, activations, losses,
the optimizer and attention softmax are left out, as MFU conventions do. Backward costs what
autograd computes: the input gradient (if the input needs one) plus the weight gradient (if the
weight is trained), each as much as the forward product, so a trained layer costs 3x its forward,
a trained layer on an input that needs no gradient 2x, a product with frozen weights on the
gradient path 2x; flash attention's recomputation in the backward is not counted (model FLOPs,
not hardware FLOPs). The frozen LM and the self-conditioning pass run forward only.

`FORMULA` is the text printed beside every MFU figure; `ldlm_step_flops` evaluates it, and
tests/test_gpu_check.py checks it against torch's FLOP counter on a real step.
"""
from __future__ import annotations

FORMULA = """\
Symbols: B sequences per step, L tokens, N latents, d latent width, D frozen-LM width, V readout vocabulary,
M MLP ratio, r = ceil(L/N); widths We/Wd/Wx/Wt of encoder/denoiser/latent decoder/token decoder and their
blocks n_enc/n_den/n_dec/n_tok; frozen LM: n_lm blocks run, I its MLP width; T real (unpadded) tokens per
sequence, T_q those of the q = round(B * read_fraction) rows of the read loss; p self-conditioning probability.
FLOPs = 2 x multiply-adds of matrix products.
Blocks (forward, one sequence; T queries of width W, S context tokens):
  self(T,W)  = 8 T W^2 + 4 T^2 W            q, k, v, out projections + scores and values
  cross(T,S,W) = 4 T W^2 + 4 S W^2 + 4 T S W  q, out + k, v of the context + scores and values
  mlp(T,W)   = 4 M T W^2;  adaLN(W) = 12 W^2 (denoiser only, once per sequence)
Parts (forward, one sequence):
  F_lm  = n_lm (8 L D^2 + 4 L^2 D + 4 L D I) + 2 D^2 (pooler)       [0 when features are cached; the pooler only
          when n_lm is all the LM's blocks: the forward stops at the block model.lm_layer reads]
  F_enc = 2 L D We [in] + 2 N r We^2 [patch] + n_enc (self(N,We) + cross(N,L,We) + mlp(N,We)) + 2 N We d
  F_den = 4 N d Wd + 256 Wd + 2 Wd^2 [in, time] + n_den (self(N,Wd) + mlp(N,Wd) + adaLN(Wd)) + 2 N Wd d
  F_dec = 2 N d Wx + 2 N r Wx^2 [unpatch] + n_dec (self(L,Wx) + cross(L,N,Wx) + mlp(L,Wx)) + 2 L Wx D
  F_tok = 2 L D Wt + n_tok (self(L,Wt) + mlp(L,Wt)) + 2 L Wt D      [0 when n_tok = 0: the readout alone]
  F_head(T) = 2 T D^2 (readout MLP);  F_emb(T) = 2 T D V (product with the frozen word embeddings)
Training step (B sequences):
  step = B F_lm + B (3 F_enc - 2 L D We) + R B ((3 + p) F_den - 256 Wd) + 3 B F_dec
       + B (3 F_tok - c 2 L D Wt) + B ((2 + g) F_head(T) + 2 F_emb(T))      token CE on the latent decoder's states
       + q (3 F_tok - 2 L D Wt) + q ((2 + k) F_head(T_q) + 2 F_emb(T_q))     read loss on the LM's states (not 'ce')
  R = recipe.diff_repeats (noise draws per sequence in L_diff); c = 1 when the token CE reads stopgrad(h_hat)
  (recipe.decoder_loss 'mse'), else 0; g = 1 when the readout's input needs a gradient (a token decoder, or h_hat
  without stopgrad), else 0; k = 1 with a token decoder.
  -2 L D We, -256 Wd, -2 L D Wt: first layers whose input needs no gradient.
  With a sampled softmax (recipe.softmax_negatives = K > 0) the training step's F_emb has C instead of V: the
  mean number of candidates, the distinct targets of the B (or q) rows plus the distinct tokens of K draws.
  denoiser alone (forward + backward, no self-conditioning) = B (3 F_den - 256 Wd)
MFU = FLOPs / measured seconds / peak FLOP/s (the GPU's dense bf16 peak, from its datasheet, and the
bf16 matrix-product rate measured on the same device)."""


def _self(T, W):
    return 8 * T * W * W + 4 * T * T * W


def _cross(T, S, W):
    return 4 * T * W * W + 4 * S * W * W + 4 * T * S * W


def _mlp(T, W, M):
    return 4 * M * T * W * W


def ldlm_step_flops(cfg, *, lm_layers: int, lm_hidden: int, lm_intermediate: int, vocab: int,
                    real_tokens: float, read_real_tokens: float | None = None, batch: int | None = None,
                    candidates: float | None = None, read_candidates: float | None = None) -> dict:
    """FLOPs of one training step of an LDLM config (see FORMULA) and its parts.

    lm_*: the frozen LM's shape (its HF config); vocab: the readout vocabulary (corpus subset);
    real_tokens: mean unpadded tokens per sequence (read_real_tokens: of the read loss's rows, default
    the same); batch: sequences per step (default train.batch_size x train.grad_accum); candidates /
    read_candidates: with recipe.softmax_negatives > 0, the sampled softmax's candidates of the token CE on
    the latent decoder's states / of the read loss (required then)."""
    m, dc, rc = cfg.model, cfg.data, cfg.recipe
    if rc.two_stage > 0 or rc.denoiser_tail > 0:
        raise ValueError("the FLOP count assumes joint training (recipe.two_stage=0, recipe.denoiser_tail=0)")
    B, q = step_rows(cfg, batch)
    L, N, d, D, V, M = dc.seq_len, m.latent_len, m.latent_dim, lm_hidden, vocab, m.mlp_ratio
    r = -(-L // N)
    We, Wd, Wx, Wt = m.enc_width, m.den_width, m.dec_width, m.tok_dec_width
    T = real_tokens
    Tq = real_tokens if read_real_tokens is None else read_real_tokens
    from ldlm.frozen_lm import blocks_run

    # the frozen LM's forward stops at the block model.lm_layer reads; all of it, pooler too, for the last
    n_lm = blocks_run(m.lm_layer, lm_layers)
    f_lm = 0 if dc.cache_features else (
        n_lm * (8 * L * D * D + 4 * L * L * D + 4 * L * D * lm_intermediate) + (2 * D * D if n_lm == lm_layers else 0))
    f_enc = 2 * L * D * We + 2 * N * r * We * We \
        + m.enc_layers * (_self(N, We) + _cross(N, L, We) + _mlp(N, We, M)) + 2 * N * We * d
    f_den = 4 * N * d * Wd + 256 * Wd + 2 * Wd * Wd \
        + m.den_layers * (_self(N, Wd) + _mlp(N, Wd, M) + 12 * Wd * Wd) + 2 * N * Wd * d
    f_dec = 2 * N * d * Wx + 2 * N * r * Wx * Wx \
        + m.dec_layers * (_self(L, Wx) + _cross(L, N, Wx) + _mlp(L, Wx, M)) + 2 * L * Wx * D
    n_tok = m.tok_dec_layers
    f_tok = 0 if not n_tok else 2 * L * D * Wt + n_tok * (_self(L, Wt) + _mlp(L, Wt, M)) + 2 * L * Wt * D
    tok_in = 2 * L * D * Wt if n_tok else 0

    def head(t):
        return 2 * t * D * D

    sampled = rc.softmax_negatives > 0
    if sampled and (candidates is None or read_candidates is None):
        raise ValueError("recipe.softmax_negatives > 0: pass candidates and read_candidates (expected_candidates)")
    V_ce, V_read = (candidates, read_candidates) if sampled else (V, V)

    def emb(t, v):
        return 2 * t * D * v

    p = m.self_cond_prob
    stopgrad = rc.decoder_loss == "mse"  # the token CE reads stopgrad(h_hat)
    g = 1 if (n_tok or not stopgrad) else 0
    k = 1 if n_tok else 0
    parts = {
        "frozen_lm": B * f_lm,
        "encoder": B * (3 * f_enc - 2 * L * D * We),
        "denoiser": rc.diff_repeats * B * ((3 + p) * f_den - 256 * Wd),
        "decoder": 3 * B * f_dec,
        "token_decoder": B * (3 * f_tok - (tok_in if stopgrad else 0)) + q * (3 * f_tok - tok_in),
        "readout": B * ((2 + g) * head(T) + 2 * emb(T, V_ce)) + q * ((2 + k) * head(Tq) + 2 * emb(Tq, V_read)),
    }
    total = sum(parts.values())
    return {"step": total, "per_token": total / (B * L), "parts": parts, "batch": B,
            "forward_per_sequence": {"frozen_lm": f_lm, "encoder": f_enc, "denoiser": f_den, "decoder": f_dec,
                                     "token_decoder": f_tok},
            "denoiser_alone": B * (3 * f_den - 256 * Wd), "denoiser_share": parts["denoiser"] / total,
            "symbols": {"B": B, "L": L, "N": N, "d": d, "D": D, "V": V, "M": M, "r": r, "We": We, "Wd": Wd, "Wx": Wx,
                        "C": V_ce, "C_q": V_read, "Wt": Wt, "n_enc": m.enc_layers, "n_den": m.den_layers, "n_dec": m.dec_layers,
                        "n_tok": n_tok, "n_lm": n_lm, "I": lm_intermediate, "T": T, "T_q": Tq, "p": p, "q": q,
                        "R": rc.diff_repeats, "c": int(stopgrad), "g": g, "k": k, "features_cached": dc.cache_features}}


def model_flops(model, batch: int | None = None) -> dict:
    """`ldlm_step_flops` for a built LDLM (after `prepare`): reads the frozen LM's shape, the
    readout vocabulary and the mean real tokens per training sequence off the model."""
    lmc = model.frozen.lm.config
    mask = model.splits["train"].mask
    B, q = step_rows(model.cfg, batch)
    cand = ({"candidates": expected_candidates(model, B), "read_candidates": expected_candidates(model, max(q, 1))}
            if model.cfg.recipe.softmax_negatives > 0 else {})
    return ldlm_step_flops(model.cfg, lm_layers=lmc.num_hidden_layers, lm_hidden=lmc.hidden_size,
                           lm_intermediate=lmc.intermediate_size, vocab=int(model.readout.allowed.sum()),
                           real_tokens=float(mask.float().sum(1).mean()), batch=batch, **cand)


def step_rows(cfg, batch: int | None = None) -> tuple[int, int]:
    """(B, q): the sequences of a training step (default train.batch_size x train.grad_accum) and the rows of
    its read loss (none under recipe.decoder_loss 'ce'), as `src/ldlm/algorithms/ldlm.py`'s decoder_loss takes them."""
    B = batch if batch is not None else cfg.train.batch_size * cfg.train.grad_accum
    rc = cfg.recipe
    return B, (max(1, round(B * rc.read_fraction)) if rc.decoder_loss != "ce" else 0)


def expected_candidates(model, rows: int, batches: int = 16) -> float:
    """The mean candidate count C of the sampled softmax over `rows` training sequences: their distinct real
    targets U (measured on the first `batches` groups of rows) plus the expected distinct tokens among K uniform
    draws from the other V - U, (V - U)(1 - (1 - 1/(V - U))^K)."""
    k, V = model.cfg.recipe.softmax_negatives, int(model.readout.allowed.sum())
    split = model.splits["train"]
    counts = []
    for i in range(batches):
        ids, mask = split.ids[i * rows:(i + 1) * rows], split.mask[i * rows:(i + 1) * rows]
        if len(ids) < rows:
            break
        counts.append(model.readout.to_local(ids[mask]).unique().numel())
    u = sum(counts) / len(counts)
    rest = V - u
    return u + (rest * (1 - (1 - 1 / rest) ** k) if rest > 0 and k > 0 else 0.0)
