"""Two of LDLM's four recipe components as small pure functions.

(The other two live in their own modules: the MSE decoder loss in `algorithms/ldlm.py`, adaptive
timestep sampling in `timesteps.py`.)
"""
from __future__ import annotations

import torch

from .schedules import Schedule


def encoder_weight(step: int, total_steps: int, start: float, ramp: float, w_max: float) -> float:
    """Diffusion-to-encoder warmup w(step): 0 for the first `start` share of training, then a linear
    ramp to `w_max` over the next `ramp` share (a step to w_max when ramp = 0)."""
    k = start * total_steps
    r = ramp * total_steps
    if step < k:
        return 0.0
    if r <= 0:
        return float(w_max)
    return float(w_max) * min(1.0, (step - k) / r)


def mix_gradient(z: torch.Tensor, w: float) -> torch.Tensor:
    """Same value as z; the gradient that flows back into z is scaled by w."""
    if w == 1.0:
        return z
    if w == 0.0:
        return z.detach()
    zd = z.detach()
    return zd + w * (z - zd)  # = w z + (1 - w) z.detach(), but exactly z in value


def decoder_input_noise(z0: torch.Tensor, schedule: Schedule, s_max: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """z~ = alpha_s z0 + sigma_s eps with s ~ U(0, s_max) per sequence; z0 itself when s_max = 0."""
    if s_max <= 0:
        return z0
    s = torch.rand(z0.shape[0], generator=generator).to(z0.device) * s_max
    eps = torch.randn(z0.shape, generator=generator).to(z0.device, z0.dtype)
    return schedule.noise(z0, s, eps)
