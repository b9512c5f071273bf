"""Reverse-process solvers for the latent diffusion model.

One DDIM-family step covers both solvers: eta = 1 is the exact ancestral (DDPM posterior)
transition of the reverse SDE, eta = 0 the deterministic ODE step. Both are safe near t = 1 under
the tan-d schedule, where plain Euler-Maruyama is not (beta(t) ~ 2/(1-t)).
"""
from __future__ import annotations

import torch

from .schedules import Schedule, log_snr_of_alpha

# the log-SNR grid spans alpha = 0.02 ... 0.999 (log-SNR -7.8 ... 6.2); the first step starts at t = 1 (pure
# noise) and the last ends at t = 0. Under tan-9 a uniform grid puts half its steps where alpha < 0.11.
GRID_ALPHA_MIN, GRID_ALPHA_MAX = 0.02, 0.999


def _uniform_grid(schedule: Schedule, steps: int) -> torch.Tensor:
    return torch.linspace(1.0, 0.0, steps + 1)


def _logsnr_grid(schedule: Schedule, steps: int) -> torch.Tensor:
    if steps < 2:
        return _uniform_grid(schedule, steps)
    lo, hi = float(log_snr_of_alpha(GRID_ALPHA_MIN)), float(log_snr_of_alpha(GRID_ALPHA_MAX))
    inner = schedule.t_at_log_snr(torch.linspace(lo, hi, steps - 1))
    return torch.cat([torch.ones(1), inner, torch.zeros(1)])


GRIDS = {"logsnr": _logsnr_grid, "uniform": _uniform_grid}  # sample.grid -> its time grid
SOLVERS = {"sde": 1.0, "ode": 0.0}  # sample.solver -> the DDIM eta of its steps


def time_grid(schedule: Schedule, steps: int, kind: str = "uniform") -> torch.Tensor:
    """steps + 1 times from 1 down to 0: 'uniform' in t, or 'logsnr' (uniform in log-SNR in between)."""
    if kind not in GRIDS:
        raise ValueError(f"unknown time grid {kind!r}")
    return GRIDS[kind](schedule, steps)


@torch.no_grad()
def reverse_diffusion(denoiser, schedule: Schedule, shape, steps: int, solver: str = "sde",
                      noise_scale: float = 1.0, generator: torch.Generator | None = None,
                      device="cpu", self_condition: bool = True, grid: str = "uniform",
                      callback=None, return_state: bool = False) -> torch.Tensor:
    """Integrate from t = 1 to t = 0 in `steps` steps on the given time grid; returns the final z0 estimate.

    `callback(i, t, z0_hat)`, if given, is called after each step's denoiser call (i = 0..steps-1,
    t the step's start time as a float) with that step's estimate of z0. `return_state` skips the last
    step and returns the noisy state at the grid's last time before 0 (an experiment, bench/decode_state.py)."""
    eta = SOLVERS[solver]
    z = torch.randn(shape, generator=generator).to(device) * noise_scale
    z0_hat = None
    ts = time_grid(schedule, steps, grid)
    for i in range(steps):
        if return_state and i == steps - 1:
            return z
        t, s = ts[i].expand(shape[0]).to(device), ts[i + 1].expand(shape[0]).to(device)
        z0_hat = denoiser(z, t, z0_hat if self_condition else None).float()
        if callback is not None:
            callback(i, float(ts[i]), z0_hat)
        a_t, s_t = schedule.alpha(t)[:, None, None], schedule.sigma(t)[:, None, None]
        a_s, s_s = schedule.alpha(s)[:, None, None], schedule.sigma(s)[:, None, None]
        eps_hat = (z - a_t * z0_hat) / s_t.clamp_min(1e-8)
        # DDPM posterior std, scaled by eta: (sigma_s / sigma_t) * sqrt(1 - alpha_t^2 / alpha_s^2)
        std = eta * (s_s / s_t.clamp_min(1e-8)) * (1 - (a_t / a_s.clamp_min(1e-8)) ** 2).clamp_min(0).sqrt()
        dir_coef = (s_s ** 2 - std ** 2).clamp_min(0).sqrt()
        noise = torch.randn(shape, generator=generator).to(device)
        z = a_s * z0_hat + dir_coef * eps_hat + noise_scale * std * noise
    return z0_hat
