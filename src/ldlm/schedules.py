"""Variance-preserving noise schedules: z_t = alpha_t * z0 + sigma_t * eps, alpha^2 + sigma^2 = 1.

t runs from 0 (clean) to 1 (pure noise). Adding a schedule means adding one small class here.
"""
from __future__ import annotations

import math

import torch


def log_snr_of_alpha(alpha) -> torch.Tensor:
    """log(alpha^2 / (1 - alpha^2)) of a variance-preserving schedule, in float64."""
    a = torch.as_tensor(alpha, dtype=torch.float64)
    return torch.log(a ** 2) - torch.log1p(-a ** 2)


class Schedule:
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.alpha(t) ** 2).clamp_min(0.0).sqrt()

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        a = self.alpha(t)
        return torch.log(a ** 2) - torch.log((1.0 - a ** 2).clamp_min(1e-20))

    def t_at_log_snr(self, lam: torch.Tensor, iters: int = 60) -> torch.Tensor:
        """The time t at which log(alpha^2 / sigma^2) = lam (bisection; the log-SNR falls monotonically in t)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(iters):
            mid = (lo + hi) / 2
            above = self.log_snr(mid.float()).double() > lam  # still too clean: the answer lies later
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return ((lo + hi) / 2).float()

    def t_at_alpha(self, alpha) -> torch.Tensor:
        """The time t at which alpha_t = alpha (0 < alpha < 1)."""
        return self.t_at_log_snr(log_snr_of_alpha(alpha))

    def noise(self, z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Forward diffusion q(z_t | z0) for per-sample times t [B]."""
        eps = torch.randn_like(z0) if eps is None else eps
        shape = (-1,) + (1,) * (z0.dim() - 1)
        return self.alpha(t).view(shape) * z0 + self.sigma(t).view(shape) * eps


class TanSchedule(Schedule):
    """TEncDM's tan-d schedule: alpha_t = 1 / sqrt(1 + d^2 tan^2(pi t / 2)); d = 9 by default."""

    def __init__(self, d: float = 9.0):
        self.d = d

    def alpha(self, t):
        tan = torch.tan(math.pi * t.double().clamp(0.0, 1.0) / 2)
        return (1.0 / torch.sqrt(1.0 + (self.d * tan) ** 2)).to(torch.float32)


class CosineSchedule(Schedule):
    """alpha_t = cos(pi t / 2)."""

    def alpha(self, t):
        return torch.cos(math.pi * t.double().clamp(0.0, 1.0) / 2).to(torch.float32)


# model.schedule -> the schedule, given model.schedule_d (the allowed values of model.schedule)
SCHEDULES = {"tan": TanSchedule, "cosine": lambda d: CosineSchedule()}


def make_schedule(name: str, d: float = 9.0) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}")
    return SCHEDULES[name](d)
