"""Experiment: autoguidance (Karras et al. 2024) with an earlier checkpoint's denoiser as the 'bad' model:
z0 = bad + w (good - bad). Everything else (encoder, decoder, rounding) from the good checkpoint.
Usage: autoguide.py GOOD_CKPT BAD_CKPT OUT.json w:noise,... seed,..."""
import sys

import torch

from common import Guided, score_grid
from ldlm.generate import load_model

torch.set_num_threads(1)
good_ckpt, bad_ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
settings = [tuple(map(float, s.split(":"))) for s in sys.argv[4].split(",")]  # w:noise
seeds = [int(x) for x in sys.argv[5].split(",")]
model = load_model(good_ckpt)
guided = Guided(model.denoiser, load_model(bad_ckpt).denoiser)
model.denoiser = guided


def apply(s):
    guided.w = s[0]
    return s[1]


score_grid(model, out, settings, seeds, apply,
           lambda s: {"w": s[0], "noise_scale": s[1], "good": good_ckpt, "bad": bad_ckpt})
