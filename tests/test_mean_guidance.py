"""sample.mean_guidance: each unrounded step's estimate of z0 pushed away from the mean latent, z0 + g (z0 - 0)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import train_micro_run

from ldlm.algorithms import build
from ldlm.algorithms.ldlm import MeanGuidance
from ldlm.cli import main
from ldlm.config import load_config
from ldlm.denoiser import ClampedDenoiser
from ldlm.errors import UserError
from ldlm.frontier import label_of
from ldlm.generate import generate, sample_settings

ROOT = Path(__file__).resolve().parents[1]


class FixedDenoiser:
    """Returns the same estimate whatever the input; records the times it was called at."""

    def __init__(self, z0):
        self.z0, self.times = z0, []

    def __call__(self, z, t, z_sc=None, given=None):
        self.times.append(float(t.max()))
        return self.z0.clone()


def test_estimate_scaled_by_one_plus_g_except_below_the_rounding_time():
    z0 = torch.randn(2, 3, 4)
    den = MeanGuidance(FixedDenoiser(z0), weight=0.5, below=0.3)
    z = torch.randn_like(z0)
    assert torch.allclose(den(z, torch.full((2,), 0.7)), 1.5 * z0)
    assert torch.allclose(den(z, torch.full((2,), 0.3)), 1.5 * z0)  # a step that starts at the time is not rounded
    assert torch.equal(den(z, torch.full((2,), 0.2)), z0)  # a rounded step's latent is left as it is


def test_given_latents_stay_clamped():
    z0, z_given = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    given = torch.tensor([[True, False, False], [False, False, True]])
    inner = ClampedDenoiser(FixedDenoiser(z0), z_given, given)
    out = MeanGuidance(inner, weight=1.0, clamp=inner.clamp)(torch.randn(2, 3, 4), torch.full((2,), 0.5))
    assert torch.equal(out[given], z_given[given])  # the condition is not pushed anywhere
    assert torch.allclose(out[~given], 2.0 * z0[~given])


def test_off_by_default_unchanged_and_recorded(micro_model):
    assert sample_settings(micro_model).mean_guidance == 0.0
    plain = [r["text"] for r in generate(micro_model, num=4, steps=4, seed=1)]
    assert [r["text"] for r in generate(micro_model, num=4, steps=4, seed=1, mean_guidance=0.0)] == plain
    recs = generate(micro_model, num=4, steps=4, seed=1, mean_guidance=2.0)
    assert recs[0]["mean_guidance"] == 2.0 and [r["text"] for r in recs] != plain
    with pytest.raises(UserError, match="--mean-guidance must be >= 0"):
        sample_settings(micro_model, mean_guidance=-0.1)
    assert label_of({"noise_scale": 1.0, "mean_guidance": 0.3}) == "ns1.0 mg0.3"


def test_refused_for_the_baselines(tok):
    torch.manual_seed(0)
    ar = build(load_config(str(ROOT / "configs" / "micro-ar.yaml")), tok).eval()
    with pytest.raises(UserError, match="--mean-guidance does not apply to an AR model"):
        sample_settings(ar, mean_guidance=0.3)


def test_cli_records_the_flag_and_refuses_a_negative_weight_in_one_line(tmp_path, capsys):
    run = train_micro_run(tmp_path)
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(run), "--num", "2", "--steps", "3", "--mean-guidance", "0.3",
                 "--out", str(out)]) == 0
    assert [json.loads(x)["mean_guidance"] for x in out.read_text().splitlines()] == [0.3, 0.3]
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--num", "2", "--mean-guidance", "-1", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--mean-guidance must be >= 0" in err
    assert out.read_bytes() == before  # nothing overwritten
