"""Schedule maths, the warmup weight, gradient mixing, decoder-input noise, adaptive timesteps."""
import math

import pytest
import torch

from ldlm.recipe import decoder_input_noise, encoder_weight, mix_gradient
from ldlm.schedules import CosineSchedule, TanSchedule
from ldlm.timesteps import AdaptiveTimesteps, UniformTimesteps, isotonic


@pytest.mark.parametrize("sched", [TanSchedule(9.0), TanSchedule(3.0), CosineSchedule()])
def test_schedule_is_variance_preserving_and_monotone(sched):
    t = torch.linspace(0, 1, 101)
    a, s = sched.alpha(t), sched.sigma(t)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(a), atol=1e-6)
    assert a[0] == pytest.approx(1.0) and a[-1] == pytest.approx(0.0, abs=1e-6)
    assert (a[1:] <= a[:-1] + 1e-7).all()


def test_tan_schedule_matches_formula():
    d = 9.0
    sched = TanSchedule(d)
    for tv in (0.1, 0.25, 0.5, 0.9):
        t = torch.tensor([tv])
        expected = 1 / math.sqrt(1 + d ** 2 * math.tan(math.pi * tv / 2) ** 2)
        assert sched.alpha(t).item() == pytest.approx(expected, rel=1e-5)
        # log SNR = -2 log(d tan(pi t / 2))
        assert sched.log_snr(t).item() == pytest.approx(-2 * math.log(d * math.tan(math.pi * tv / 2)), rel=1e-4)


def test_forward_noise_statistics():
    sched = TanSchedule(9.0)
    z0 = torch.randn(4096, 8)
    for tv in (0.05, 0.3, 0.8):
        t = torch.full((4096,), tv)
        zt = sched.noise(z0, t)
        a = sched.alpha(t[:1]).item()
        corr = torch.corrcoef(torch.stack([z0.flatten(), zt.flatten()]))[0, 1].item()
        assert corr == pytest.approx(a, abs=0.03)  # unit-variance z0: corr(z0, z_t) = alpha_t
        assert zt.var().item() == pytest.approx(1.0, abs=0.05)


def test_encoder_warmup_weight():
    # K = 20 % of 1000 steps at 0, ramp over 10 % to w_max = 0.5
    w = [encoder_weight(s, 1000, 0.2, 0.1, 0.5) for s in (0, 199, 200, 250, 300, 999)]
    assert w == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5, 0.5])
    assert encoder_weight(0, 1000, 0.0, 0.0, 1.0) == 1.0  # naive: full gradient from step 0
    assert encoder_weight(500, 1000, 0.5, 0.0, 1.0) == 1.0  # no ramp: a step


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_mix_gradient_scales_only_the_gradient(w):
    z = torch.randn(3, 4, requires_grad=True)
    out = mix_gradient(z, w)
    assert torch.equal(out.detach(), z.detach())
    if out.requires_grad:
        out.sum().backward()
        assert torch.allclose(z.grad, torch.full_like(z, w))
    else:
        assert w == 0.0


def test_decoder_input_noise():
    sched = TanSchedule(9.0)
    z0 = torch.randn(512, 4, 8)
    assert decoder_input_noise(z0, sched, 0.0) is z0
    g = torch.Generator().manual_seed(0)
    zn = decoder_input_noise(z0, sched, 0.15, g)
    assert not torch.allclose(zn, z0)
    # per-sequence signal level is alpha_s with s <= 0.15: correlation with z0 at least alpha(0.15)
    a_min = sched.alpha(torch.tensor([0.15])).item()
    for i in range(0, 512, 64):
        c = torch.corrcoef(torch.stack([z0[i].flatten(), zn[i].flatten()]))[0, 1].item()
        assert c > a_min - 0.15
    # the noise actually spans a range of levels
    err = ((zn - z0) ** 2).mean(dim=(1, 2))
    assert err.max() > 4 * err.min()


def test_isotonic_regression():
    y = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0, 4.0])
    f = isotonic(y)
    assert (f[1:] >= f[:-1]).all()
    assert f.tolist() == pytest.approx([1.0, 7 / 3, 7 / 3, 7 / 3, 4.5, 4.5])


def test_adaptive_density_moves_to_where_the_loss_changes():
    ts = AdaptiveTimesteps(bins=32, decay=0.9, uniform=0.1, every=5)
    g = torch.Generator().manual_seed(0)
    before = ts.probs.clone()
    for _ in range(200):
        t = ts.sample(256, g)
        loss = torch.sigmoid((t - 0.7) / 0.04)  # the loss jumps around t = 0.7
        ts.update(t, loss)
    centres, dens = ts.density()
    peak = centres[dens.argmax()].item()
    assert abs(peak - 0.7) < 0.08
    near = ((centres > 0.6) & (centres < 0.8)).float()
    assert (ts.probs.float() * near).sum() > 0.6  # most mass where dF/dt is large
    assert (ts.probs * 32).min() >= 0.1 - 1e-6  # the uniform floor is kept
    assert torch.allclose(before, torch.full_like(before, 1 / 32))
    # samples follow the density
    t = ts.sample(20000, g)
    assert ((t > 0.6) & (t < 0.8)).float().mean() > 0.55


def test_adaptive_state_roundtrip():
    a = AdaptiveTimesteps(bins=16, every=1)
    a.update(torch.rand(100), torch.rand(100))
    b = AdaptiveTimesteps(bins=16, every=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.probs, b.probs) and a.updates == b.updates


def test_uniform_timesteps_range():
    t = UniformTimesteps(0.2).sample(10000, torch.Generator().manual_seed(0))
    assert t.min() >= 0.2 and t.max() <= 1.0 and abs(t.mean().item() - 0.6) < 0.01
