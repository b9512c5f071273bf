"""Python API for sampling: load a checkpoint (EMA weights), generate text, write a samples file.

    from ldlm.generate import load_model, generate
    model = load_model("runs/tiny")
    records = generate(model, num=8, steps=50)
    print(records[0]["text"])
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from . import checkpoint as ck
from .algorithms import Algorithm, ids_to_text
from .config import SampleConfig
from .ema import apply_ema
from .errors import UserError
from .trainer import autocast, pick_device, setup_model


def load_model(path: str | Path, device: str = "auto", use_ema: bool = True) -> Algorithm:
    """A trained model from a run folder or ckpt-<step> folder, in eval mode."""
    ckpt = ck.resolve_checkpoint(path)
    cfg = ck.load_config_of(ckpt)
    dev = pick_device(device)
    model = setup_model(cfg, dev)
    expected = model.trainable_state()
    ck.load_into(model, ck.load_tensors(ckpt / "model.safetensors"), expected, f"checkpoint '{ckpt}'")
    if use_ema:  # EMA parameters and buffers (BatchNorm running statistics)
        apply_ema(model, ck.load_tensors(ckpt / "ema.safetensors"), f"checkpoint '{ckpt}' (EMA)")
    model.checkpoint = str(ckpt)
    return model.eval()


def sample_settings(model: Algorithm, **overrides) -> SampleConfig:
    """The model's saved sampling config with `overrides` (num=..., steps=..., ...) applied."""
    sc = dataclasses.replace(model.cfg.sample)
    for k, v in overrides.items():
        if v is None:
            continue
        if not hasattr(sc, k):
            raise UserError(f"unknown sampling setting '{k}'; valid: {', '.join(f.name for f in dataclasses.fields(sc))}")
        setattr(sc, k, v)
    if sc.num <= 0:
        raise UserError(f"--num must be a positive number of samples, got {sc.num}")
    if sc.steps <= 0:
        raise UserError(f"--steps must be a positive number of steps, got {sc.steps}")
    if sc.noise_scale < 0:
        raise UserError(f"--noise-scale must be >= 0, got {sc.noise_scale}")
    if sc.solver not in ("sde", "ode"):
        raise UserError(f"--solver must be sde or ode, got {sc.solver!r}")
    return sc


@torch.no_grad()
def generate(model: Algorithm, **settings) -> list[dict]:
    """Sample `num` texts; returns one record per sample: text, tokens and the settings used."""
    sc = sample_settings(model, **settings)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(sc.seed)
    records: list[dict] = []
    meta = {"algo": model.cfg.algo, "checkpoint": getattr(model, "checkpoint", None),
            **{k: v for k, v in dataclasses.asdict(sc).items() if k != "batch_size"}}
    t0 = time.time()
    for start in range(0, sc.num, sc.batch_size):
        n = min(sc.batch_size, sc.num - start)
        with autocast(device, sc.bf16):
            ids = model.generate_ids(n, sc, g, device)
        toks, texts = ids_to_text(model.tokenizer, ids.cpu())
        records.extend({"text": t, "tokens": k} for t, k in zip(texts, toks))
    per_sample = (time.time() - t0) / sc.num
    for r in records:
        r.update(meta, sec_per_sample=per_sample)
    return records


def write_samples(records: list[dict], path: str | Path) -> None:
    """One JSON object per line; written to a temporary file and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck.write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
