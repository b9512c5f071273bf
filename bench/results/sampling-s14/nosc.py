"""Experiment: sampling without self-conditioning (the model was trained with it half the time).
Usage: nosc.py CKPT OUT.json noise,... seed,..."""
import functools
import sys

import ldlm.algorithms.ldlm as L
from common import score_grid
from ldlm.generate import load_model

ckpt, out = sys.argv[1], sys.argv[2]
L.reverse_diffusion = functools.partial(L.reverse_diffusion, self_condition=False)
score_grid(load_model(ckpt), out, [float(x) for x in sys.argv[3].split(",")], [int(x) for x in sys.argv[4].split(",")],
           lambda ns: ns, lambda ns: {"self_condition": False, "noise_scale": ns, "ckpt": ckpt})
