"""Two of LDLM's four recipe components as small pure functions: the diffusion-to-encoder warmup and
the decoder-input noise.

(The other two live in their own modules: the MSE decoder loss in `algorithms/ldlm.py`, adaptive
timestep sampling in `timesteps.py`.)
"""
from __future__ import annotations

import math

import torch

from .schedules import Schedule


def encoder_weight(step: int, total_steps: int, start: float, ramp: float, w_max: float) -> float:
    """Linear warmup w(step): 0 for the first `start` share of training, then a linear ramp to `w_max`
    over the next `ramp` share (a step to w_max when ramp = 0)."""
    k = start * total_steps
    r = ramp * total_steps
    if step < k:
        return 0.0
    if r <= 0:
        return float(w_max)
    return float(w_max) * min(1.0, (step - k) / r)


def sigmoid_weight(step: int, warmup_steps: int, k: float = 10.0, c: float = 0.8, w_max: float = 1.0) -> float:
    """The paper's sigmoid warmup gamma(s) = sigmoid(k (s/S - c)) over S = warmup_steps, rescaled so it
    runs from exactly 0 at s = 0 to w_max at s = S (the raw sigmoid would start at 3e-4 and end at
    0.88 for k = 10, c = 0.8, then jump to 1); w_max after S."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(w_max)
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    lo, hi = sig(-k * c), sig(k * (1.0 - c))
    return float(w_max) * (sig(k * (step / warmup_steps - c)) - lo) / (hi - lo)


def _ramp(step: int, total_steps: int, rc) -> float:
    return encoder_weight(step, total_steps, rc.warmup_start, rc.warmup_ramp, rc.w_max)


def _sigmoid(step: int, total_steps: int, rc) -> float:
    steps = rc.warmup_steps or round((rc.warmup_start + rc.warmup_ramp) * total_steps)
    return sigmoid_weight(step, steps, rc.warmup_k, rc.warmup_c, rc.w_max)


WARMUPS = {"ramp": _ramp, "sigmoid": _sigmoid}  # recipe.warmup -> w(step, total_steps, rc)


def warmup_weight(step: int, total_steps: int, rc) -> float:
    """The diffusion-to-encoder gradient weight at `step` under the recipe config `rc`."""
    return WARMUPS[rc.warmup](step, total_steps, rc)


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
    """Schedule form: z~ = alpha_s z0 + sigma_s eps with s ~ U(0, s_max) per sequence; z0 when s_max = 0."""
    if s_max <= 0:
        return z0
    s = torch.rand(z0.shape[0], generator=generator).to(z0.device) * s_max
    eps = torch.randn(z0.shape, generator=generator).to(z0.device, z0.dtype)
    return schedule.noise(z0, s, eps)


def gaussian_input_noise(z0: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's form: z~ = z0 + std * eps on the normalised latents (training only); z0 when std = 0.

    Against unit-variance latents a large std leaves the decoder little of each dimension, so unused
    dimensions cannot carry information and the decoder must read latents as noisy as the sampler's."""
    if std <= 0:
        return z0
    return z0 + std * torch.randn(z0.shape, generator=generator).to(z0.device, z0.dtype)
