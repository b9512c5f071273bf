"""Experiment: a noise scale that depends on the step's time: `early` for t >= switch, `late` below.
Usage: split_noise.py CKPT OUT.json early:late:switch,... seed,..."""
import sys

import torch

import ldlm.algorithms.ldlm as L
from common import score_grid
from ldlm import sampling as S
from ldlm.generate import load_model

ckpt, out = sys.argv[1], sys.argv[2]
settings = [tuple(map(float, s.split(":"))) for s in sys.argv[3].split(",")]  # early:late:switch
seeds = [int(x) for x in sys.argv[4].split(",")]
cur = {}


@torch.no_grad()
def patched(denoiser, schedule, shape, steps, solver="sde", noise_scale=1.0, generator=None, device="cpu",
            self_condition=True, grid="uniform", callback=None, return_state=False):
    early, late, switch = cur["s"]
    eta = S.SOLVERS[solver]
    z = torch.randn(shape, generator=generator).to(device) * early
    z0_hat = None
    ts = S.time_grid(schedule, steps, grid)
    for i in range(steps):
        t, s = ts[i].expand(shape[0]), ts[i + 1].expand(shape[0])
        z0_hat = denoiser(z, t, z0_hat).float()
        a_t, s_t = schedule.alpha(t)[:, None, None], schedule.sigma(t)[:, None, None]
        a_s, s_s = schedule.alpha(s)[:, None, None], schedule.sigma(s)[:, None, None]
        eps_hat = (z - a_t * z0_hat) / s_t.clamp_min(1e-8)
        std = eta * (s_s / s_t.clamp_min(1e-8)) * (1 - (a_t / a_s.clamp_min(1e-8)) ** 2).clamp_min(0).sqrt()
        dir_coef = (s_s ** 2 - std ** 2).clamp_min(0).sqrt()
        noise = torch.randn(shape, generator=generator)
        ns = early if float(ts[i]) >= switch else late
        z = a_s * z0_hat + dir_coef * eps_hat + ns * std * noise
    return z0_hat


L.reverse_diffusion = patched


def apply(st):
    cur["s"] = st
    return st[0]


score_grid(load_model(ckpt), out, settings, seeds, apply, lambda st: {"early": st[0], "late": st[1], "switch": st[2]})
