"""The causal token decoder (`model.tok_dec_causal`): position i reads h and the tokens before i only, and the
left-to-right decoding at sampling (KV-cached) writes what the teacher-forced pass would pick at each position."""
import os

import pytest
import torch
from conftest import ROOT, micro_token_decoder, train_micro_run

from ldlm.config import load_config
from ldlm.errors import UserError

MICRO = os.path.join(ROOT, "configs", "micro.yaml")


@pytest.fixture(scope="module")
def causal(tok):
    return micro_token_decoder(tok, "causal")


def test_position_i_sees_only_earlier_tokens(causal):
    L = causal.cfg.data.seq_len
    torch.manual_seed(1)
    h = torch.randn(2, L, causal.frozen.hidden)
    ids = torch.randint(1000, 2000, (2, L))
    j = L // 2
    changed = ids.clone()
    changed[:, j] = 2500
    with torch.no_grad():
        a, b = causal.token_logits(h, ids=ids), causal.token_logits(h, ids=changed)
    assert torch.allclose(a[:, : j + 1], b[:, : j + 1], atol=1e-5)  # up to j: the changed token is not read
    assert not torch.allclose(a[:, j + 1], b[:, j + 1], atol=1e-3)  # j + 1 reads token j


@pytest.mark.parametrize("prompt", [False, True])
def test_left_to_right_decoding_matches_teacher_forcing(causal, prompt):
    """Greedy KV-cached decoding against the full causal pass over its own output: each decoded token is the
    argmax of the teacher-forced logits at its position; a prompt's tokens are written in place and read on from."""
    from ldlm.conditioning import Given

    n, d = causal.latent_shape()
    L = causal.cfg.data.seq_len
    z = torch.randn(4, n, d, generator=torch.Generator().manual_seed(2))
    given = None
    if prompt:
        mask = torch.zeros(4, L, dtype=torch.bool)
        mask[:, :6] = True
        ids = torch.full((4, L), causal.tokenizer.pad_token_id)
        ids[:, 0] = causal.tokenizer.cls_token_id
        ids[:, 1:6] = torch.randint(1000, 3000, (4, 5), generator=torch.Generator().manual_seed(5))
        given = Given(ids, mask)
    ids = causal.decode_latents(z, given=given)
    assert (ids[:, 0] == causal.tokenizer.cls_token_id).all()
    with torch.no_grad():
        logits = causal.token_logits(causal.decoder(z).float(), ids=ids)
    best = causal.readout.to_global(logits.argmax(-1))
    start = 6 if prompt else 1
    assert torch.equal(best[:, start:], ids[:, start:])
    if prompt:
        assert torch.equal(ids[:, :6], given.ids[:, :6])
        assert not torch.equal(best[:, 1:6], ids[:, 1:6])  # the prompt is not what it would have written
    assert len({tuple(r.tolist()) for r in ids}) > 1  # the latents decide the text


def test_sampled_decoding_is_seeded_and_differs_from_argmax(causal):
    n, d = causal.latent_shape()
    z = torch.randn(4, n, d, generator=torch.Generator().manual_seed(3))
    a = causal.decode_latents(z, 1.0, torch.Generator().manual_seed(0))
    b = causal.decode_latents(z, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, causal.decode_latents(z))


def test_one_line_errors(causal, tok):
    with pytest.raises(UserError, match="tok_dec_layers"):
        load_config(MICRO, ["model.tok_dec_causal=true"])
    n, d = causal.latent_shape()
    with pytest.raises(UserError, match="readout_contrast"):
        causal.decode_latents(torch.zeros(1, n, d), contrast=1.0)


def test_trains_and_samples(tmp_path, tok):
    """Two training steps run (teacher-forced CE through the sampled softmax, evaluation, a checkpoint) and the
    loaded model samples text left to right."""
    from ldlm.config import SampleConfig
    from ldlm.generate import load_model

    run = train_micro_run(tmp_path, 60, 1, "model.tok_dec_layers=1", "model.tok_dec_causal=true",
                          "recipe.softmax_negatives=64", "train.eval_every=2")
    model = load_model(run, device="cpu")
    assert model.tok_decoder.causal
    ids = model.generate_ids(3, SampleConfig(num=3, steps=2, round_below=0.6), torch.Generator().manual_seed(0),
                             "cpu")
    assert ids.shape == (3, model.cfg.data.seq_len) and (ids[:, 0] == tok.cls_token_id).all()
