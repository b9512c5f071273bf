"""Timestep samplers for training: uniform, and adaptive (CDCD-style time warping).

The adaptive sampler keeps an EMA of the diffusion loss in bins of t, fits a monotone
non-decreasing curve F(t) through the bin means (isotonic regression), and samples t with density
proportional to dF/dt -- where the loss changes fastest -- mixed with a uniform floor. This is the
paper's rule too: with density p(t) ~ F'(t), the loss grows linearly in the warped time u = CDF(t).
F is piecewise linear through the bin centres (extended linearly to the outer edges), and each bin gets
the rise of F across its own edges, so a flat loss gives a uniform density. The loss itself is not
reweighted. `update` collects losses from every micro-batch; `step` (once per optimizer step)
counts steps and refits every `every` of them.
"""
from __future__ import annotations

import torch


class UniformTimesteps:
    def __init__(self, t_min: float = 0.0):
        self.t_min = t_min

    def sample(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        u = torch.rand(n, generator=generator)
        return (self.t_min + (1.0 - self.t_min) * u).to(device)

    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        pass

    def step(self) -> None:
        pass

    def density(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(bin centres, density) for plots and logs."""
        centres = torch.linspace(self.t_min, 1.0, 65)[:-1] + (1.0 - self.t_min) / 128
        return centres, torch.full_like(centres, 1.0 / (1.0 - self.t_min))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, s: dict) -> None:
        pass


def isotonic(y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares non-decreasing fit (pool-adjacent-violators)."""
    y = y.double().tolist()
    w = [1.0] * len(y) if w is None else w.double().tolist()
    blocks = []  # [value, weight, length]
    for yi, wi in zip(y, w):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            ww = w1 + w2
            blocks.append([(v1 * w1 + v2 * w2) / ww if ww > 0 else (v1 + v2) / 2, ww, n1 + n2])
    out = []
    for v, _, n in blocks:
        out.extend([v] * n)
    return torch.tensor(out, dtype=torch.float64)


class AdaptiveTimesteps(UniformTimesteps):
    def __init__(self, t_min: float = 0.0, bins: int = 64, decay: float = 0.99, uniform: float = 0.1,
                 every: int = 10):
        super().__init__(t_min)
        self.bins, self.decay, self.uniform, self.every = bins, decay, uniform, every
        self.edges = torch.linspace(t_min, 1.0, bins + 1, dtype=torch.float64)
        self.ema = torch.zeros(bins, dtype=torch.float64)
        self.seen = torch.zeros(bins, dtype=torch.float64)  # bias-correction weight of each bin's EMA
        self.probs = torch.full((bins,), 1.0 / bins, dtype=torch.float64)  # probability of each bin
        self.updates = 0

    def sample(self, n, generator=None, device="cpu"):
        b = torch.multinomial(self.probs.float(), n, replacement=True, generator=generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        t = self.edges[b] + u * (self.edges[b + 1] - self.edges[b])
        return t.float().to(device)

    @torch.no_grad()
    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Feed per-sample times and per-sample losses of one micro-batch into the per-bin EMA."""
        t, loss = t.detach().double().cpu(), loss.detach().double().cpu()
        b = torch.bucketize(t, self.edges[1:-1])
        total = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, b, loss)
        count = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, b, torch.ones_like(loss))
        hit = count > 0
        mean = torch.where(hit, total / count.clamp_min(1), 0.0)
        self.ema[hit] = self.decay * self.ema[hit] + (1 - self.decay) * mean[hit]
        self.seen[hit] = self.decay * self.seen[hit] + (1 - self.decay)

    def step(self) -> None:
        """Called once per optimizer step; refits the density every `every` steps."""
        self.updates += 1
        if self.updates % self.every == 0:
            self.refit()

    def refit(self) -> None:
        known = self.seen > 0
        if known.sum() < 2:
            return
        centres = (self.edges[:-1] + self.edges[1:]) / 2
        value = self.ema[known] / self.seen[known]
        # fill unseen bins by interpolation so the curve is defined everywhere, then make it monotone
        f = isotonic(torch.tensor(_interp(centres.tolist(), centres[known].tolist(), value.tolist()),
                                  dtype=torch.float64))
        # F at the bin edges (piecewise linear through the centres, extended linearly by half a bin at both
        # ends): each bin gets the rise of F across its own edges, not the rise from the previous centre
        at_edges = torch.tensor(_interp(self.edges.tolist(), centres.tolist(), f.tolist()), dtype=torch.float64)
        if self.bins > 1:
            at_edges[0] = f[0] - (f[1] - f[0]) / 2
            at_edges[-1] = f[-1] + (f[-1] - f[-2]) / 2
        inc = torch.diff(at_edges).clamp_min(0.0)
        if inc.sum() <= 1e-12:
            adaptive = torch.full_like(inc, 1.0 / self.bins)
        else:
            adaptive = inc / inc.sum()
        self.probs = (1 - self.uniform) * adaptive + self.uniform / self.bins

    def density(self):
        centres = ((self.edges[:-1] + self.edges[1:]) / 2).float()
        return centres, (self.probs / torch.diff(self.edges)).float()

    def state_dict(self) -> dict:
        return {"ema": self.ema.clone(), "seen": self.seen.clone(), "probs": self.probs.clone(),
                "updates": torch.tensor(self.updates)}

    def load_state_dict(self, s: dict) -> None:
        self.ema, self.seen, self.probs = s["ema"].double(), s["seen"].double(), s["probs"].double()
        self.updates = int(s["updates"])


def _interp(x, xp, fp):
    """Piecewise-linear interpolation, flat outside [xp[0], xp[-1]]."""
    out, j = [], 0
    for xi in x:
        while j < len(xp) - 2 and xi > xp[j + 1]:
            j += 1
        if xi <= xp[0]:
            out.append(fp[0])
        elif xi >= xp[-1]:
            out.append(fp[-1])
        else:
            a = (xi - xp[j]) / (xp[j + 1] - xp[j])
            out.append(fp[j] + a * (fp[j + 1] - fp[j]))
    return out


# recipe.timesteps -> the sampler, given the recipe config (the allowed values of recipe.timesteps)
TIMESTEPS = {
    "uniform": lambda rc: UniformTimesteps(rc.t_min),
    "adaptive": lambda rc: AdaptiveTimesteps(rc.t_min, rc.adaptive_bins, rc.adaptive_decay, rc.adaptive_uniform,
                                             rc.adaptive_every),
}


def make_timesteps(recipe) -> UniformTimesteps:
    return TIMESTEPS[recipe.timesteps](recipe)
