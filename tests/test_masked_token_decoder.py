"""The masked token decoder (`model.tok_dec_masked`): each position reads h and the draft's tokens (or [MASK]) at
every position, and decoding writes the hidden positions in parallel passes, the surest first (mask-predict)."""
import math
import os

import pytest
import torch
from conftest import ROOT, micro_token_decoder, train_micro_run

from ldlm.config import load_config
from ldlm.errors import UserError

MICRO = os.path.join(ROOT, "configs", "micro.yaml")


@pytest.fixture(scope="module")
def masked(tok):
    return micro_token_decoder(tok, "masked")


def test_every_position_reads_the_whole_draft(masked):
    L = masked.cfg.data.seq_len
    torch.manual_seed(1)
    h = torch.randn(2, L, masked.frozen.hidden)
    ids = torch.randint(1000, 2000, (2, L))
    j = L // 2
    changed = ids.clone()
    changed[:, j] = masked.tokenizer.mask_token_id
    with torch.no_grad():
        a, b = masked.token_logits(h, ids=ids), masked.token_logits(h, ids=changed)
    assert not torch.allclose(a[:, j - 1], b[:, j - 1], atol=1e-3)  # before j and after: bidirectional
    assert not torch.allclose(a[:, j + 1], b[:, j + 1], atol=1e-3)


def test_training_draft_hides_some_positions_and_scores_them(masked, tok):
    L = masked.cfg.data.seq_len
    ids = torch.randint(1000, 2000, (64, L))
    mask = torch.ones(64, L, dtype=torch.bool)
    masked.train()
    try:
        torch.manual_seed(2)
        draft, scored = masked.masked_draft(ids, mask)
    finally:
        masked.eval()
    hidden = draft == tok.mask_token_id
    assert torch.equal(hidden, scored)  # scored exactly where hidden
    assert torch.equal(draft[~hidden], ids[~hidden]) and not hidden[:, 0].any()  # position 0 always shown
    share = hidden.float().mean(1)
    assert share.min() > 0 and share.max() > 0.8 and share.min() < 0.2  # r ~ U(0, 1) per row, one at least
    draft, scored = masked.masked_draft(ids, mask)  # not training: all but position 0 hidden, the passage scored
    assert (draft[:, 1:] == tok.mask_token_id).all() and torch.equal(draft[:, 0], ids[:, 0])
    assert torch.equal(scored, mask)


def test_one_pass_is_the_argmax_of_the_all_masked_readout(masked):
    n, d = masked.latent_shape()
    z = torch.randn(4, n, d, generator=torch.Generator().manual_seed(3))
    ids = masked.decode_latents(z, iters=1)
    h = masked.decoder(z).float()
    with torch.no_grad():
        draft = torch.full_like(ids, masked.tokenizer.mask_token_id)
        draft[:, 0] = masked.tokenizer.cls_token_id
        first = masked.token_logits(h, ids=draft)
    assert (ids[:, 0] == masked.tokenizer.cls_token_id).all()
    assert torch.equal(ids[:, 1:], masked.readout.to_global(first.argmax(-1))[:, 1:])


@pytest.mark.parametrize("iters", [2, 5])
def test_passes_write_the_surest_positions_on_a_cosine_schedule(masked, iters, monkeypatch):
    """Each pass writes the hidden positions its proposals are surest of, leaving floor(free cos(pi/2 k/K))
    hidden after pass k and none at the end; written tokens never change; the pass reads the draft so far."""
    n, d = masked.latent_shape()
    L = masked.cfg.data.seq_len
    z = torch.randn(3, n, d, generator=torch.Generator().manual_seed(4))
    drafts = []
    forward = masked.tok_decoder.forward

    def spy(h, tokens=None, *a, **k):
        drafts.append(tokens.clone())
        return forward(h, tokens, *a, **k)

    monkeypatch.setattr(masked.tok_decoder, "forward", spy)
    ids = masked.decode_latents(z, iters=iters)
    monkeypatch.undo()
    emb = masked.frozen.word_embeddings()
    assert len(drafts) == iters
    free = L - 1
    hidden = [(dr == emb[masked.tokenizer.mask_token_id]).all(-1) for dr in drafts] + [
        ids == masked.tokenizer.mask_token_id]
    for k in range(1, iters + 1):
        assert (hidden[k].sum(1) == math.floor(free * math.cos(math.pi / 2 * k / iters))).all()
        assert not (hidden[k] & ~hidden[k - 1]).any()  # a written position stays written
    # the last pass's proposals where it wrote: its argmax given the draft it read
    with torch.no_grad():
        logits = masked.readout(forward(masked.decoder(z).float(), drafts[-1]))
    best = masked.readout.to_global(logits.argmax(-1))
    last = hidden[-2]
    assert last.any() and torch.equal(ids[last], best[last])


def test_given_tokens_are_kept_and_sampling_is_seeded(masked):
    from ldlm.conditioning import Given

    n, d = masked.latent_shape()
    L = masked.cfg.data.seq_len
    mask = torch.zeros(2, L, dtype=torch.bool)
    mask[:, :5] = True
    ids = torch.full((2, L), masked.tokenizer.pad_token_id)
    ids[:, 0] = masked.tokenizer.cls_token_id
    ids[:, 1:5] = torch.randint(1000, 3000, (2, 4), generator=torch.Generator().manual_seed(5))
    given = Given(ids, mask)
    z = torch.randn(2, n, d, generator=torch.Generator().manual_seed(6))
    out = masked.decode_latents(z, given=given)
    assert torch.equal(out[:, :5], ids[:, :5]) and (out != masked.tokenizer.mask_token_id).all()
    a = masked.decode_latents(z, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, masked.decode_latents(z, 1.0, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, masked.decode_latents(z))


def test_one_line_errors(masked):
    with pytest.raises(UserError, match="tok_dec_layers"):
        load_config(MICRO, ["model.tok_dec_masked=true"])
    with pytest.raises(UserError, match="set one of them"):
        load_config(MICRO, ["model.tok_dec_layers=1", "model.tok_dec_masked=true", "model.tok_dec_causal=true"])
    with pytest.raises(UserError, match="decode_iters"):
        load_config(MICRO, ["sample.decode_iters=0"])
    n, d = masked.latent_shape()
    with pytest.raises(UserError, match="tok_dec_masked"):
        masked.decode_latents(torch.zeros(1, n, d), stop_mass=0.5)


def test_trains_and_samples(tmp_path, tok):
    """Two training steps run (the draft's CE through the sampled softmax, evaluation, a checkpoint) and the loaded
    model samples text in parallel passes, with rounding."""
    from ldlm.config import SampleConfig
    from ldlm.generate import load_model

    run = train_micro_run(tmp_path, 60, 1, "model.tok_dec_layers=1", "model.tok_dec_masked=true",
                          "recipe.softmax_negatives=64", "train.eval_every=2")
    model = load_model(run, device="cpu")
    assert model.tok_decoder.masked
    ids = model.generate_ids(3, SampleConfig(num=3, steps=2, round_below=0.6, decode_iters=3),
                             torch.Generator().manual_seed(0), "cpu")
    assert ids.shape == (3, model.cfg.data.seq_len) and (ids[:, 0] == tok.cls_token_id).all()
    assert (ids != tok.mask_token_id).all()


@pytest.mark.parametrize("decoder_loss", ["mse+ce", "mse"])
def test_only_the_all_masked_pass_reaches_the_latents(masked, decoder_loss, monkeypatch):
    """With a token CE that shapes the latents ('mse+ce'), the CE through h_hat reads an all-[MASK] draft (the
    parallel readout's pressure) and partial drafts are learned on stopgrad(h_hat); with 'mse' nothing reaches them."""
    calls = []
    token_ce = masked._token_ce

    def spy(h, ids, mask, accuracy=True, partial=True):
        calls.append((h.requires_grad, partial))
        return token_ce(h, ids, mask, accuracy, partial)

    monkeypatch.setattr(masked, "_token_ce", spy)
    monkeypatch.setattr(masked.cfg.recipe, "decoder_loss", decoder_loss)
    L = masked.cfg.data.seq_len
    ids = torch.randint(1000, 2000, (4, L))
    mask = torch.ones(4, L, dtype=torch.bool)
    h = torch.randn(4, L, masked.frozen.hidden)
    n, d = masked.latent_shape()
    masked.train()
    try:
        masked.decoder_loss(torch.randn(4, n, d), h, ids, mask)
    finally:
        masked.eval()
    if decoder_loss == "mse+ce":
        assert calls == [(True, False), (False, True), (False, True)]  # h_hat all-masked, sg(h_hat) partial, h
    else:
        assert calls == [(False, True), (False, True)]
