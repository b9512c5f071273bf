"""sample.readout_contrast and sample.stop_mass: how LDLM/TEncDM read decoded latents out as tokens."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import train_micro_run

from ldlm.algorithms import build
from ldlm.algorithms.ldlm import cut_after_end
from ldlm.cli import main
from ldlm.config import load_config
from ldlm.errors import UserError
from ldlm.frontier import label_of
from ldlm.generate import generate, sample_settings

ROOT = Path(__file__).resolve().parents[1]


def local_ids(model, *global_ids):
    return model.readout.to_local(torch.tensor(global_ids)).tolist()


def fixed_logits(model, monkeypatch, probs_by_position: list[dict[int, float]]):
    """Make the readout return these probabilities (local id -> p; the rest of the mass spread evenly) at each
    position of every row, whatever the latent."""
    n_vocab = model.readout.vocab_ids().numel()
    L = model.cfg.data.seq_len
    p = torch.full((L, n_vocab), 1e-9)
    for i, row in enumerate(probs_by_position):
        for k, v in row.items():
            p[i, k] = v
    logits = p.log()
    monkeypatch.setattr(model, "token_logits", lambda h, mask=None, local=None: logits.expand(h.shape[0], L, n_vocab))


def test_off_by_default_and_unchanged(micro_model):
    z = torch.randn(3, *micro_model.latent_shape())
    plain = micro_model.decode_latents(z)
    assert torch.equal(micro_model.decode_latents(z, contrast=0.0, stop_mass=0.0), plain)
    sc = sample_settings(micro_model)
    assert sc.readout_contrast == 0.0 and sc.stop_mass == 0.0


def test_stop_mass_decides_the_end_by_the_end_tokens_total(micro_model, tok, monkeypatch):
    sep, pad, a, b, c = local_ids(micro_model, tok.sep_token_id, tok.pad_token_id,
                                  *tok.convert_tokens_to_ids(["the", "king", "lord"]))
    fixed_logits(micro_model, monkeypatch, [
        {sep: 0.30, a: 0.25, b: 0.25, c: 0.20},   # [SEP] wins alone, but 0.7 of the mass says a word comes
        {sep: 0.30, pad: 0.25, a: 0.45},          # the end tokens hold 0.55 although a word wins alone
        {a: 0.2, b: 0.7, sep: 0.1},               # a plain word
    ])
    z = torch.randn(2, *micro_model.latent_shape())
    plain = micro_model.decode_latents(z)[:, :3]
    mass = micro_model.decode_latents(z, stop_mass=0.5)[:, :3]
    the, king = tok.convert_tokens_to_ids(["the", "king"])
    assert plain.tolist() == [[tok.sep_token_id, the, king]] * 2
    assert mass.tolist() == [[the, tok.sep_token_id, king]] * 2  # position 0: the best word (0.25 ties: first)
    # a threshold above every position's end mass: no position reads as the end
    assert tok.sep_token_id not in micro_model.decode_latents(z, stop_mass=0.6)[:, :3].tolist()[0]


def test_contrast_scores_against_the_mean_latents_readout(micro_model, tok):
    z = torch.randn(4, *micro_model.latent_shape())
    logp = torch.log_softmax(micro_model.token_logits(micro_model.decoder(z)), -1)
    zero = torch.zeros(1, *micro_model.latent_shape())
    prior = torch.log_softmax(micro_model.token_logits(micro_model.decoder(zero)), -1)
    ends = local_ids(micro_model, tok.sep_token_id, tok.pad_token_id)
    for c in (0.5, 2.0):
        want = logp - c * prior
        want[..., ends] = logp[..., ends]  # the end tokens are not penalised
        assert torch.equal(micro_model.decode_latents(z, contrast=c), micro_model.readout.to_global(want.argmax(-1)))
    # the more contrast, the fewer positions read as what the decoder writes for the mean latent
    prior_tok = micro_model.readout.to_global(prior.argmax(-1)).expand(4, -1)
    hits = [int((micro_model.decode_latents(z, contrast=c) == prior_tok).sum()) for c in (0.0, 0.5, 2.0)]
    assert hits[0] > hits[2] and hits == sorted(hits, reverse=True)


def test_rounding_reads_out_with_the_same_knobs(micro_model, tok):
    z = torch.randn(3, *micro_model.latent_shape())
    ids = micro_model.decode_latents(z, contrast=1.0, stop_mass=0.3)
    assert not torch.equal(ids, micro_model.decode_latents(z))
    mask = cut_after_end(ids, tok.sep_token_id, tok.pad_token_id, torch.zeros(3, dtype=torch.long))[1]
    feats = micro_model.frozen.features(torch.where(mask, ids, tok.pad_token_id), mask)
    want = micro_model.encode(feats, mask, frozen=True)
    assert torch.allclose(micro_model.round_latents(z, contrast=1.0, stop_mass=0.3), want, atol=1e-5)


def test_generate_records_the_knobs_and_bad_values_are_refused(micro_model, tok):
    recs = generate(micro_model, num=2, steps=2, readout_contrast=0.3, stop_mass=0.5, round_below=0.6)
    assert recs[0]["readout_contrast"] == 0.3 and recs[0]["stop_mass"] == 0.5
    with pytest.raises(UserError, match="--stop-mass must be in"):
        sample_settings(micro_model, stop_mass=1.5)
    with pytest.raises(UserError, match="--readout-contrast must be >= 0"):
        sample_settings(micro_model, readout_contrast=-0.1)
    torch.manual_seed(0)
    ar = build(load_config(str(ROOT / "configs" / "micro-ar.yaml")), tok).eval()
    with pytest.raises(UserError, match="--stop-mass does not apply to an AR model"):
        sample_settings(ar, stop_mass=0.5)
    assert label_of({"noise_scale": 1.0, "readout_contrast": 0.15, "stop_mass": 0.5}) == "ns1.0 ct0.15 sm0.5"


def test_cli_records_the_flags_and_refuses_a_bad_stop_mass_in_one_line(tmp_path, capsys):
    run = train_micro_run(tmp_path)
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(run), "--num", "2", "--steps", "3", "--readout-contrast", "0.2",
                 "--stop-mass", "0.5", "--out", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["readout_contrast"], r["stop_mass"]) for r in recs] == [(0.2, 0.5)] * 2
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--num", "2", "--stop-mass", "2", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--stop-mass must be in [0, 1]" in err
    assert out.read_bytes() == before  # nothing overwritten
