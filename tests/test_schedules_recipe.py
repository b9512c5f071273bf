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
        ts.step()
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
    a.step()
    b = AdaptiveTimesteps(bins=16, every=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.probs, b.probs) and a.updates == b.updates


def test_uniform_timesteps_range():
    t = UniformTimesteps(0.2).sample(10000, torch.Generator().manual_seed(0))
    assert t.min() >= 0.2 and t.max() <= 1.0 and abs(t.mean().item() - 0.6) < 0.01


def _fill_adaptive(ts: AdaptiveTimesteps, curve, n_steps: int = 300, micro: int = 1) -> None:
    """Feed a noiseless loss curve L(t) at the sampler's own times."""
    g = torch.Generator().manual_seed(0)
    for _ in range(n_steps):
        for _ in range(micro):
            t = ts.sample(512, g)
            ts.update(t, curve(t))
        ts.step()


def test_adaptive_flat_loss_gives_uniform_density():
    # the old fit gave bin 0 the absolute loss F(bin 0) as its "increment": P(t < 1/64) was ~0.87
    ts = AdaptiveTimesteps(bins=64, decay=0.9, uniform=0.1, every=10)
    _fill_adaptive(ts, lambda t: torch.ones_like(t))
    _, dens = ts.density()
    assert (dens - 1.0).abs().max() < 0.1  # within 10 % of uniform everywhere
    assert ts.probs[0] < 1.1 / 64


def test_adaptive_density_follows_the_loss_derivative():
    # L(t) = t^2 on [t_min, 1]: the density must be 0.9 * 2t / (1 - t_min^2) + 0.1 / (1 - t_min) in every bin
    # (tolerance 5 % of its maximum: the bin means are estimated from samples), and its mean must be where
    # F' puts it within a quarter bin (the old fit assigned each increment half a bin late and gave bin 0
    # the absolute loss)
    t_min, bins = 0.1, 48
    ts = AdaptiveTimesteps(t_min=t_min, bins=bins, decay=0.9, uniform=0.1, every=10)
    _fill_adaptive(ts, lambda t: t ** 2)
    centres, dens = ts.density()
    want = 0.9 * 2 * centres / (1 - t_min ** 2) + 0.1 / (1 - t_min)
    assert (dens - want).abs().max() < 0.05 * want.max()
    mean_want = 0.9 * (2 / 3) * (1 - t_min ** 3) / (1 - t_min ** 2) + 0.1 * (1 + t_min) / 2
    width = (1 - t_min) / bins
    assert (ts.probs.float() * centres).sum().item() == pytest.approx(mean_want, abs=width / 4)
    assert ts.edges[0] == pytest.approx(t_min)
    t = ts.sample(10000, torch.Generator().manual_seed(1))
    assert t.min() >= t_min


def test_adaptive_refits_count_optimizer_steps_not_micro_batches():
    # with 4 micro-batches per step and every = 10, the first refit happens at step 10, not step 3
    ts = AdaptiveTimesteps(bins=16, decay=0.5, every=10)
    _fill_adaptive(ts, lambda t: t, n_steps=9, micro=4)
    assert torch.allclose(ts.probs, torch.full_like(ts.probs, 1 / 16))
    _fill_adaptive(ts, lambda t: t, n_steps=1, micro=4)
    assert ts.updates == 10 and not torch.allclose(ts.probs, torch.full_like(ts.probs, 1 / 16))


def test_sigmoid_warmup_runs_from_zero_to_w_max():
    from ldlm.recipe import sigmoid_weight

    w = [sigmoid_weight(s, 1000, 10.0, 0.8, 1.0) for s in (0, 400, 800, 999, 1000, 5000)]
    assert w[0] == 0.0 and w[-1] == w[-2] == 1.0
    assert 0.45 < w[2] < 0.65  # about half way at c (0.57 after rescaling)
    assert all(a <= b for a, b in zip(w, w[1:]))
    assert w[1] < 0.05 and w[3] > 0.99


def test_gaussian_decoder_input_noise():
    from ldlm.recipe import gaussian_input_noise

    z0 = torch.randn(512, 8, 16)
    assert gaussian_input_noise(z0, 0.0) is z0
    zn = gaussian_input_noise(z0, 3.0, torch.Generator().manual_seed(0))
    assert (zn - z0).std().item() == pytest.approx(3.0, rel=0.02)


def test_log_snr_time_grid():
    from ldlm.sampling import GRID_ALPHA_MAX, GRID_ALPHA_MIN, time_grid
    from ldlm.schedules import TanSchedule, log_snr_of_alpha

    sched = TanSchedule(9.0)
    ts = time_grid(sched, 10, "logsnr")
    assert ts[0] == 1.0 and ts[-1] == 0.0 and len(ts) == 11 and (ts[1:] < ts[:-1]).all()
    lam = sched.log_snr(ts[1:-1])
    gaps = lam[1:] - lam[:-1]
    assert torch.allclose(gaps, gaps.mean().expand_as(gaps), rtol=1e-3)  # uniform in log-SNR
    assert lam[0].item() == pytest.approx(float(log_snr_of_alpha(GRID_ALPHA_MIN)), abs=1e-3)
    assert lam[-1].item() == pytest.approx(float(log_snr_of_alpha(GRID_ALPHA_MAX)), abs=1e-3)
    # the uniform grid puts half its steps where alpha < 0.11 under tan-9; the log-SNR grid far fewer
    assert (sched.alpha(time_grid(sched, 10, "uniform")[:-1]) < 0.11).sum() >= 5
    assert (sched.alpha(ts[:-1]) < 0.11).sum() <= 3
    assert torch.equal(time_grid(sched, 4, "uniform"), torch.linspace(1, 0, 5))
    a = torch.tensor([0.8, 0.5, 0.3, 0.2])
    assert torch.allclose(sched.alpha(sched.t_at_alpha(a)), a, atol=1e-4)
