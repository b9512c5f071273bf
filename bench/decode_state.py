"""Experiment: decode the sampler's last noisy state instead of the denoiser's final estimate of z0.

The final estimate is a posterior mean from the last grid time (t = 0.04 at 25 uniform steps: alpha 0.87 under
tan-9), so it is shrunk toward the mean, while the latent decoder was trained on *noised* latents (alpha_s z0 +
sigma_s eps, s <= 0.15), which the sampler's state at that time resembles. This samples with the state instead
(`reverse_diffusion(return_state=True)`: one denoiser call fewer) and writes a samples file for `ldlm eval`:

    .venv/bin/python bench/decode_state.py --ckpt runs/levers/latent-d32 --out runs/dstate/state25.jsonl
    .venv/bin/ldlm eval runs/dstate/state25.jsonl --out runs/dstate/state25-eval.json --threads 1

On the demo model it scored worse than the estimate (bench/results/solver-d32/README.md): not a library option.
"""
from __future__ import annotations

import argparse
import functools

import torch

import ldlm.algorithms.ldlm as ldlm_algo
from ldlm.generate import generate, load_model, write_samples


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="LDLM run or checkpoint folder")
    p.add_argument("--out", required=True, help="samples .jsonl to write")
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.ckpt, device="cpu")
    ldlm_algo.reverse_diffusion = functools.partial(ldlm_algo.reverse_diffusion, return_state=True)
    records = generate(model, num=a.num, steps=a.steps)
    for r in records:
        r["decoded_from"] = "state"
    write_samples(records, a.out)
    return records


if __name__ == "__main__":
    main()
