"""sample.round_below: below that time, each sampling step's estimate of z0 becomes the latent of the text it reads
out as (Diffusion-LM's rounding on the learned latent space)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import train_micro_run

from ldlm import conditioning as C
from ldlm.algorithms import build
from ldlm.algorithms.ldlm import RoundedDenoiser, cut_after_end
from ldlm.cli import main
from ldlm.config import load_config
from ldlm.generate import sample_settings

ROOT = Path(__file__).resolve().parents[1]


def micro(tok, name="micro.yaml"):
    torch.manual_seed(0)
    return build(load_config(str(ROOT / "configs" / name)), tok).eval()


def test_cut_after_end_keeps_up_to_the_first_end_past_the_start():
    ids = torch.tensor([[1, 5, 2, 7, 2, 9],    # end (2) at 2: cut there
                        [1, 5, 2, 7, 2, 9],    # ... but the start is 3: the end at 4 counts
                        [1, 5, 6, 7, 8, 9]])   # no end: all kept
    out, mask = cut_after_end(ids, end=2, pad=0, start=torch.tensor([0, 3, 0]))
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1] * 6]
    assert out.tolist() == [[1, 5, 2, 0, 0, 0], [1, 5, 2, 7, 2, 0], [1, 5, 6, 7, 8, 9]]


def test_rounded_latent_depends_only_on_the_text_it_reads_out_as(tok):
    model = micro(tok)
    n, d = model.latent_shape()
    z0 = torch.randn(3, n, d)
    nudged = z0 + 1e-4 * torch.randn_like(z0)  # too small to change any argmax token
    assert torch.equal(model.decode_latents(z0), model.decode_latents(nudged))
    r = model.round_latents(z0)
    assert r.shape == z0.shape and not torch.allclose(r, z0)
    assert torch.equal(r, model.round_latents(nudged))  # a projection: same text, same latent
    tencdm = micro(tok, "micro-tencdm.yaml")  # no encoder: the frozen LM's normalised states of the text
    z = torch.randn(2, *tencdm.latent_shape())
    ids = tencdm.decode_latents(z)
    mask = cut_after_end(ids, tok.sep_token_id, tok.pad_token_id, torch.zeros(2, dtype=torch.long))[1]
    assert torch.allclose(tencdm.round_latents(z)[mask], tencdm.frozen.features(
        torch.where(mask, ids, tok.pad_token_id), mask)[mask], atol=1e-5)


def test_rounded_denoiser_rounds_only_below_its_time(tok):
    model = micro(tok)
    n, d = model.latent_shape()
    z, calls = torch.randn(2, n, d), []

    def den(z, t, z_sc=None):
        calls.append(float(t[0]))
        return z * 0.5

    rd = RoundedDenoiser(model, den, below=0.3)
    assert torch.equal(rd(z, torch.full((2,), 0.5)), z * 0.5)  # at or above 0.3: the estimate as it is
    assert torch.equal(rd(z, torch.full((2,), 0.2)), model.round_latents(z * 0.5))
    assert calls == pytest.approx([0.5, 0.2])


def test_sampled_rounding_reads_out_sampled_text_and_argmax_at_temperature_zero(tok):
    """sample.round_temperature > 0: the text a rounded estimate becomes is sampled from the readout (seeded by the
    sampler's generator), so two draws differ where argmax rounding is one fixed projection."""
    model = micro(tok)
    n, d = model.latent_shape()
    z0 = torch.randn(4, n, d)
    g = torch.Generator().manual_seed(0)
    a = model.round_latents(z0, temperature=1.0, generator=g)
    b = model.round_latents(z0, temperature=1.0, generator=g)
    assert not torch.equal(a, b)  # fresh tokens each draw
    assert torch.equal(model.round_latents(z0, temperature=1.0, generator=torch.Generator().manual_seed(0)), a)
    assert torch.equal(model.round_latents(z0, temperature=0.0, generator=g), model.round_latents(z0))
    # what it encodes is the text decode_latents samples with the same generator state
    ids = model.decode_latents(z0, 1.0, torch.Generator().manual_seed(0))
    mask = cut_after_end(ids, tok.sep_token_id, tok.pad_token_id, torch.zeros(4, dtype=torch.long))[1]
    want = model.encode(model.frozen.features(torch.where(mask, ids, tok.pad_token_id), mask), mask, frozen=True)
    assert torch.allclose(a, want, atol=1e-5)
    rd = RoundedDenoiser(model, lambda z, t, z_sc=None: z, 0.5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rd(z0, torch.full((4,), 0.2)), a)


def test_sweeps_set_the_rounding_temperature_only_where_there_is_rounding():
    """Without rounding the readout's temperature does nothing: `ldlm frontier` (and bench/frontier.py, through the
    same drop_inert) keeps it at 0 there instead of sampling the same texts under other labels."""
    from types import SimpleNamespace

    from ldlm.frontier import sweep_grid

    args = SimpleNamespace(steps="25", noise_scale=None, decode_temperature=None, round_below="0,0.1",
                           round_temperature="0,1.0", temperature=None, top_p=None, solver=None)
    assert sweep_grid(args) == [{"steps": 25, "round_below": 0.0, "round_temperature": 0.0},
                                {"steps": 25, "round_below": 0.1, "round_temperature": 0.0},
                                {"steps": 25, "round_below": 0.1, "round_temperature": 1.0}]


def test_rounding_keeps_a_condition_clamped_and_its_tokens(tok):
    model = micro(tok)
    conds = C.make_conditions(tok, ["to be or not to be", "my lord", None], [None, "the end of it", "farewell"])
    g = C.layout(tok, conds, model.cfg.data.seq_len)
    sc = sample_settings(model, steps=4, round_below=1.0)  # every step rounded
    ids = model.generate_ids(3, sc, torch.Generator().manual_seed(0), "cpu", given=g)
    assert torch.equal(ids[g.mask], g.ids[g.mask])
    # the rounded estimate keeps the given latents (clamped) and re-reads the given tokens
    from ldlm.denoiser import ClampedDenoiser

    z_given, glat = model.condition_latents(g)
    rd = RoundedDenoiser(model, ClampedDenoiser(model.denoiser, z_given, glat), 1.0, g)
    out = rd(torch.randn(z_given.shape), torch.full((3,), 0.5))
    assert torch.equal(out[glat], z_given[glat])


def test_sample_flag_is_checked_and_recorded(tok, tmp_path, capsys):
    run = train_micro_run(tmp_path)
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(run), "--num", "2", "--steps", "3", "--round-below", "0.5",
                 "--round-temperature", "0.7", "--out", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["round_below"], r["round_temperature"]) for r in recs] == [(0.5, 0.7)] * 2
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--round-below", "1.5"]) != 0
    assert "--round-below must be in [0, 1]" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(run), "--round-temperature", "-1"]) != 0
    assert "--round-temperature must be >= 0" in capsys.readouterr().err
    ar = micro(tok, "micro-ar.yaml")
    with pytest.raises(Exception, match="--round-below does not apply to an AR model"):
        sample_settings(ar, round_below=0.3)
