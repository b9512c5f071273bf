"""Python API for sampling: load a checkpoint (EMA weights), generate text, write a samples file.

    from ldlm.generate import load_model, generate
    model = load_model("runs/tiny")
    records = generate(model, num=8, steps=50)
    print(records[0]["text"])
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from . import checkpoint as ck
from .algorithms import Algorithm, ids_to_text
from .config import SampleConfig, choices
from .ema import apply_ema
from .errors import UserError
from .frozen_lm import load_tokenizer
from .precision import autocast
from .trainer import pick_device, setup_model

# sampling setting -> its command-line flag, for messages
FLAGS = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(SampleConfig)}


def load_model(path: str | Path, device: str = "auto", use_ema: bool = True) -> Algorithm:
    """A trained model in eval mode, from a run folder, a ckpt-<step> folder (EMA weights unless
    `use_ema=False`), an `ldlm export` folder, or a Hugging Face Hub id of one ('owner/name[@rev]')."""
    from .export import check_frozen_lm, is_export, read_marker
    from .hub import download, looks_like_hub_id

    if looks_like_hub_id(str(path)):
        path = download(str(path))
    if is_export(path):
        folder = Path(path)
        meta = read_marker(folder)
        cfg = ck.load_config_of(folder)
        check_frozen_lm(meta.get("frozen_lm", {}), str(folder))
        model = setup_model(cfg, pick_device(device), tokenizer=load_tokenizer(str(folder / "tokenizer")))
        # an export holds the EMA weights as the model's own
        ck.load_into(model, ck.load_tensors(folder / "model.safetensors"), model.trainable_state(),
                     f"exported model '{folder}'")
        model.checkpoint = str(folder)
        return model.eval()
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
        if k not in model.sample_keys:
            raise UserError(f"{FLAGS[k]} does not apply to an {model.cfg.algo.upper()} model (its sampler reads "
                            f"{', '.join(FLAGS[x] for x in model.sample_keys)}); drop it")
        setattr(sc, k, v)
    if sc.num <= 0:
        raise UserError(f"--num must be a positive number of samples, got {sc.num}")
    if sc.steps <= 0:
        raise UserError(f"--steps must be a positive number of steps, got {sc.steps}")
    if sc.noise_scale < 0:
        raise UserError(f"--noise-scale must be >= 0, got {sc.noise_scale}")
    if not 0.0 <= sc.round_below <= 1.0:
        raise UserError(f"--round-below must be in [0, 1] (a time of the reverse process; 0 = never), got {sc.round_below}")
    if sc.lexicon_beam < 1:
        raise UserError(f"--lexicon-beam must be >= 1 (the lexicon's beam width), got {sc.lexicon_beam}")
    if sc.decode_iters < 1:
        raise UserError(f"--decode-iters must be >= 1 (a masked token decoder's passes), got {sc.decode_iters}")
    if sc.round_temperature < 0:
        raise UserError(f"--round-temperature must be >= 0 (0 = argmax), got {sc.round_temperature}")
    if sc.readout_contrast < 0:
        raise UserError(f"--readout-contrast must be >= 0 (0 = plain readout), got {sc.readout_contrast}")
    if not 0.0 <= sc.stop_mass <= 1.0:
        raise UserError(f"--stop-mass must be in [0, 1] (0 = plain argmax end), got {sc.stop_mass}")
    if sc.mean_guidance < 0:
        raise UserError(f"--mean-guidance must be >= 0 (0 = none), got {sc.mean_guidance}")
    if sc.guidance < 0:
        raise UserError(f"--guidance must be >= 0 (0 = no guidance), got {sc.guidance}")
    for k in ("solver", "grid"):
        if getattr(sc, k) not in choices(f"sample.{k}"):
            raise UserError(f"{FLAGS[k]} must be one of {', '.join(choices(f'sample.{k}'))}, got {getattr(sc, k)!r}")
    return sc


def step_texts(model: Algorithm, state) -> list[str]:
    """The text of each row of a sampling state; MDLM's still-masked positions shown as '░'."""
    return ids_to_text(model.tokenizer, model.trajectory_ids(state).cpu(), getattr(model, "mask_id", None))[1]


@torch.no_grad()
def generate(model: Algorithm, return_trajectory: bool = False, progress: bool = False, prompts=None,
             suffixes=None, gap: int | None = None, conditions: list | None = None, **settings) -> list[dict]:
    """Sample `num` texts; returns one record per sample: text, tokens and the settings used.

    `return_trajectory=True` adds `trajectory`: per sampling step, the step number, its time t (None
    for AR), the wall time the step took for the sample's batch (ms) and the text as it stood after
    the step (LDLM: the argmax readout of that step's estimate of z0). `progress` shows a bar.

    Conditional: `prompts` (continue them) and/or `suffixes` (end with them; with prompts, fill the
    middle), a string or a list; or ready `conditioning.Condition`s. `num` defaults to one sample per
    prompt, and cycles through them. Records then also hold `prompt`, `suffix` and `written`; `text` is
    the whole passage with the given text verbatim (after the tokenizer's round trip)."""
    from tqdm import tqdm

    from . import conditioning as C

    if conditions is None and (prompts is not None or suffixes is not None):
        conditions = C.make_conditions(model.tokenizer, prompts, suffixes, gap)
    if conditions is not None:
        if not conditions:
            raise UserError("the list of prompts is empty; give at least one prompt or suffix")
        if not model.suffix_ok and any(c.suffix for c in conditions):
            raise UserError(f"an {model.cfg.algo.upper()} model writes left to right and cannot take a suffix; "
                            f"drop --suffix (infilling needs LDLM, TEncDM or MDLM)")
        if settings.get("num") is None:
            settings["num"] = len(conditions)
    sc = sample_settings(model, **settings)
    given = None
    if conditions is not None:
        conditions = [conditions[i % len(conditions)] for i in range(sc.num)]
        given = C.layout(model.tokenizer, conditions, model.cfg.data.seq_len)  # errors before any sampling
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(sc.seed)
    records: list[dict] = []
    trajectories: list[list[dict]] = []
    # only the settings this algorithm reads: the others did not shape the samples
    meta = {"algo": model.cfg.algo, "checkpoint": getattr(model, "checkpoint", None),
            **{k: getattr(sc, k) for k in model.sample_keys if k != "batch_size"}}
    per_batch = sc.steps if "steps" in model.sample_keys else model.cfg.data.seq_len - 1
    batches = range(0, sc.num, sc.batch_size)
    bar = tqdm(total=len(batches) * per_batch, desc=f"sample {model.cfg.algo}", unit="step", leave=False,
               disable=not progress or os.environ.get("LDLM_QUIET") == "1", dynamic_ncols=True)
    t0 = time.time()
    for start in batches:
        n = min(sc.batch_size, sc.num - start)
        steps: list[dict] = []
        last = [time.perf_counter()]

        def on_step(i, t, state):
            if return_trajectory and device.type == "cuda":  # per-step times are asked for: make them true
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            entry = {"step": i + 1, "t": None if t is None else round(float(t), 6), "ms": (now - last[0]) * 1000}
            if return_trajectory:
                entry["texts"] = step_texts(model, state)
            steps.append(entry)
            bar.update(1)
            last[0] = time.perf_counter()  # decoding the trajectory is not part of the step's time

        cb = on_step if (return_trajectory or not bar.disable) else None
        with autocast(device, sc.bf16):
            if given is None:
                ids = model.generate_ids(n, sc, g, device, callback=cb)
            else:
                ids = model.generate_ids(n, sc, g, device, callback=cb, given=given[start: start + n])
        bar.update(max(0, per_batch - len(steps)))  # AR stops early once every row has ended
        if given is not None:
            records.extend(C.records(model.tokenizer, conditions[start: start + n], given[start: start + n], ids.cpu()))
        else:
            toks, texts = ids_to_text(model.tokenizer, ids.cpu())
            records.extend({"text": t, "tokens": k} for t, k in zip(texts, toks))
        if return_trajectory:
            trajectories.extend([{"step": e["step"], "t": e["t"], "ms": round(e["ms"], 3), "text": e["texts"][j]}
                                 for e in steps] for j in range(n))
    bar.close()
    per_sample = (time.time() - t0) / sc.num  # with a trajectory, this includes decoding every step
    for j, r in enumerate(records):
        r.update(meta, sec_per_sample=per_sample)
        if return_trajectory:
            r["trajectory"] = trajectories[j]
    return records


@torch.no_grad()
def reconstruct(model: Algorithm, texts: list[str], batch_size: int = 64) -> list[str]:
    """Each text through the autoencoder and back (LDLM, TEncDM): decode(encode(x)), read out by argmax.
    Scored like samples, these texts show how much of the gap to the data the autoencoder alone causes."""
    from .data import tokenize

    if not hasattr(model, "reconstruct_ids"):
        raise UserError(f"an {model.cfg.algo.upper()} model has no autoencoder to reconstruct text with")
    device = next(model.parameters()).device
    split = tokenize(model.tokenizer, list(texts), model.cfg.data.seq_len)
    out: list[str] = []
    for i in range(0, len(texts), batch_size):
        ids, mask = split.ids[i: i + batch_size].to(device), split.mask[i: i + batch_size].to(device)
        with autocast(device, sample_settings(model).bf16):
            rec = model.reconstruct_ids(ids, mask)
        out.extend(ids_to_text(model.tokenizer, rec.cpu())[1])
    return out


def write_samples(records: list[dict], path: str | Path) -> None:
    """One JSON object per line; written to a temporary file and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck.write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
