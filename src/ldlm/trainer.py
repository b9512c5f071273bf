"""The training loop shared by every algorithm: AdamW with LR warmup and cosine decay, gradient
clipping and accumulation, EMA weights, bf16 autocast, a progress bar, a JSONL metrics log,
periodic validation, atomic checkpoints and exact resume."""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch

from . import checkpoint as ck
from .algorithms import Algorithm, build
from .blocks import count_params
from .config import Config
from .data import BatchIterator, build_corpus
from .errors import UserError
from .frozen_lm import load_tokenizer


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, tc) -> float:
    if step < tc.lr_warmup:
        return tc.lr * (step + 1) / tc.lr_warmup
    if tc.lr_decay == "constant":
        return tc.lr
    progress = (step - tc.lr_warmup) / max(1, tc.steps - tc.lr_warmup)
    floor = tc.min_lr_frac * tc.lr
    return floor + (tc.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class EMA:
    """Exponential moving average of the trainable parameters."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.params:
                self.params[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Temporarily run the model with the EMA weights."""
        backup = {}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.params:
                    backup[n] = p.detach().clone()
                    p.copy_(self.params[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in backup:
                        p.copy_(backup[n])


def make_optimizer(model: torch.nn.Module, tc) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.99))


def setup_model(cfg: Config, device: torch.device) -> Algorithm:
    tokenizer = load_tokenizer(cfg.model.lm)
    model = build(cfg, tokenizer).to(device)
    return model


class Trainer:
    def __init__(self, cfg: Config, out_dir: str, resume: bool = False, quiet: bool = False):
        self.cfg, self.out = cfg, Path(out_dir)
        self.quiet = quiet or os.environ.get("LDLM_QUIET") == "1"
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = pick_device(tc.device)
        self.resume_from = None
        if self.out.exists() and any(self.out.glob("ckpt-*")):
            if not resume:
                raise UserError(f"'{self.out}' already holds checkpoints; pass --resume to continue that run "
                                f"or choose another --out")
            self.resume_from = ck.resolve_checkpoint(self.out)
        torch.manual_seed(tc.seed)
        self.model = setup_model(cfg, self.device)
        self.corpus = build_corpus(cfg.data, self.model.tokenizer, cfg.model.lm)
        self.model.prepare(self.corpus, self.device)
        self.opt = make_optimizer(self.model, tc)
        self.ema = EMA(self.model, tc.ema)
        self.batches = BatchIterator(len(self.corpus.train), tc.batch_size, tc.seed)
        self.step = 0
        if self.resume_from is not None:
            self._load(self.resume_from)
        self.log_file = None

    # -- checkpoints ----------------------------------------------------------------------
    def save(self) -> Path:
        opt_tensors, opt_scalars = ck.flatten_optimizer(self.opt.state_dict())
        train_tensors = {**opt_tensors, **{f"extra.{k}": v for k, v in self.model.extra_state().items()},
                         "rng.cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            train_tensors["rng.cuda"] = torch.cuda.get_rng_state()
        state = {"optimizer": opt_scalars, "data": self.batches.state_dict(), "algo": self.cfg.algo}
        return ck.save_checkpoint(self.out, self.step, self.cfg, self.model.trainable_state(),
                                  {f"{k}": v for k, v in self.ema.params.items()}, train_tensors, state,
                                  self.cfg.train.keep_last)

    def _load(self, path: Path) -> None:
        ck.load_into(self.model, ck.load_tensors(path / "model.safetensors"), self.model.trainable_state(),
                     f"checkpoint '{path}'")
        ema = ck.load_tensors(path / "ema.safetensors")
        ck.check_fits(ema, self.ema.params, f"checkpoint '{path}' (EMA)")
        self.ema.params = {k: v.float().to(self.device) for k, v in ema.items()}
        tt = ck.load_tensors(path / "train.safetensors")
        st = ck.load_state_json(path)
        self.opt.load_state_dict(ck.unflatten_optimizer({k: v for k, v in tt.items() if k.startswith("optim.")},
                                                        st["optimizer"]))
        self.model.load_extra_state({k[len("extra."):]: v for k, v in tt.items() if k.startswith("extra.")})
        torch.set_rng_state(tt["rng.cpu"])
        if "rng.cuda" in tt and torch.cuda.is_available():
            torch.cuda.set_rng_state(tt["rng.cuda"])
        self.batches.load_state_dict(st["data"])
        self.step = int(st["step"])

    # -- logging --------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()

    @torch.no_grad()
    def validate(self) -> dict:
        tc = self.cfg.train
        self.model.eval()
        g = torch.Generator().manual_seed(1234)
        n = len(self.corpus.valid)
        sums: dict[str, float] = {}
        batches = 0
        with self.ema.swapped_in(self.model), autocast(self.device, tc.bf16):
            for i in range(tc.eval_batches):
                start = (i * tc.batch_size) % n
                idx = torch.arange(start, min(n, start + tc.batch_size))
                if len(idx) < 2:
                    continue
                out = self.model.evaluate(self.model.get_batch("valid", idx, self.device), g)
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v
                batches += 1
                if start + tc.batch_size >= n:
                    break
        self.model.train()
        return {k: v / max(1, batches) for k, v in sums.items()}

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> dict:
        from tqdm import tqdm

        cfg, tc = self.cfg, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        ck.write_text_atomic(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        self.log_file = open(self.out / "metrics.jsonl", "a", encoding="utf-8")
        n_params = count_params(self.model)
        self.log({"event": "start", "step": self.step, "algo": cfg.algo, "trainable_params": n_params,
                  "device": str(self.device), "train_passages": len(self.corpus.train),
                  "valid_passages": len(self.corpus.valid), "time": time.time()})
        if not self.quiet:
            print(f"{cfg.algo}: {n_params / 1e6:.2f} M trainable parameters; {len(self.corpus.train)} train / "
                  f"{len(self.corpus.valid)} valid passages of {cfg.data.seq_len} tokens; device {self.device}")
        self.model.train()
        tokens_per_step = tc.batch_size * tc.grad_accum * cfg.data.seq_len
        bar = tqdm(total=tc.steps, initial=self.step, desc=f"train {cfg.algo}", unit="step",
                   disable=self.quiet, dynamic_ncols=True)
        t_last, step_last = time.time(), self.step
        t0 = time.time()
        last_logs: dict = {}
        val: dict = {}
        while self.step < tc.steps:
            lr = lr_at(self.step, tc)
            for group in self.opt.param_groups:
                group["lr"] = lr
            acc: dict[str, float] = {}
            for _ in range(tc.grad_accum):
                batch = self.model.get_batch("train", self.batches.next(), self.device)
                with autocast(self.device, tc.bf16):
                    loss, logs = self.model.loss(batch, self.step)
                (loss / tc.grad_accum).backward()
                for k, v in logs.items():
                    acc[k] = acc.get(k, 0.0) + v / tc.grad_accum
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip or float("inf"))
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.ema.update(self.model)
            self.step += 1
            last_logs = acc
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                now = time.time()
                tok_s = tokens_per_step * (self.step - step_last) / max(now - t_last, 1e-9)
                t_last, step_last = now, self.step
                self.log({"step": self.step, "lr": lr, "grad_norm": float(gnorm), "tok_s": tok_s,
                          "elapsed": now - t0, **acc})
                bar.set_postfix(loss=f"{acc.get('loss', 0):.3f}", diff=f"{acc.get('diff', 0):.3f}",
                                tok_s=f"{tok_s:.0f}")
            if (tc.eval_every and self.step % tc.eval_every == 0) or self.step == tc.steps:
                val = self.validate()
                self.log({"step": self.step, "split": "valid", **val, **self.model.log_extras()})
            if (tc.save_every and self.step % tc.save_every == 0) or self.step == tc.steps:
                self.save()
        bar.close()
        self.log_file.close()
        from .plots import plot_training

        plot_training(self.out)
        return {"step": self.step, "train": last_logs, "valid": val, "wall_s": time.time() - t0}
