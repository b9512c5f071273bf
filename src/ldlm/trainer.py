"""The training loop shared by every algorithm: AdamW with LR warmup and cosine decay, gradient
clipping and accumulation, EMA weights, bf16 autocast, a progress bar, a JSONL metrics log,
periodic validation, atomic checkpoints and exact resume; DDP under torchrun.

Reproducibility. Every micro-batch reseeds torch's global RNG from (train.seed, step, j), where
j = rank * grad_accum + micro is the micro-batch's index in the global batch, and takes rows
[j*B, (j+1)*B) of the step's global batch (one shuffled permutation per epoch, the same on every
rank). So all noise (timesteps, diffusion noise, the self-conditioning coin, dropout) and all data
are functions of the step: a resumed run repeats the uninterrupted one exactly, every rank draws
its own noise, and 2 processes x batch B see the same micro-batches as 1 process x batch B x 2
accumulation steps. Checkpoints still carry the RNG states, for code that draws outside steps.

Faults. A step whose loss or gradient is non-finite on any rank is skipped on every rank (no
update, the algorithm's extra state and buffers restored) and logged; `train.max_bad_steps` in a
row stop the run with the last good checkpoint untouched. SIGTERM/SIGINT finish the current step,
save a checkpoint, redraw the plots and exit (128 + signal number); a second Ctrl-C exits at once.
The plots (curves.png, timesteps.png) are also redrawn at every evaluation; optional trackers mirror
metrics.jsonl (tracker.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch

from . import checkpoint as ck
from . import distributed as du
from . import plots
from .algorithms import Algorithm, build
from .blocks import format_param_counts
from .config import Config, schedule_horizon
from .data import BatchIterator, check_corpus_size, load_corpus
from .ema import EMA, ema_buffers
from .errors import UserError
from .frozen_lm import load_tokenizer
from .precision import autocast, native_bf16
from .resume import check_corpus, check_resume
from .runlock import RunLock
from .tracker import Tracker, check_tracker, open_tracker


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def validation_batches(n: int, batch_size: int, eval_batches: int) -> list[torch.Tensor]:
    """Row indices of each validation batch: consecutive rows from the split's start, the same every time
    (up to `eval_batches` batches of 2 rows or more, stopping at the split's end)."""
    out = []
    for i in range(eval_batches):
        start = (i * batch_size) % n
        idx = torch.arange(start, min(n, start + batch_size))
        if len(idx) < 2:
            continue
        out.append(idx)
        if start + batch_size >= n:
            break
    return out


def micro_seed(seed: int, step: int, j: int) -> int:
    """Seed of micro-batch j (index in the global batch) of optimizer step `step`."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{step}/{j}".encode(), digest_size=8).digest(), "little") >> 1


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT: a checkpoint was saved; the CLI prints the message and exits 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def lr_at(step: int, tc) -> float:
    if step < tc.lr_warmup:
        return tc.lr * (step + 1) / tc.lr_warmup
    if tc.lr_decay == "constant":
        return tc.lr
    # over the run's horizon, fixed at its start: an extended run stays at the floor (no jump)
    progress = (step - tc.lr_warmup) / max(1, schedule_horizon(tc) - tc.lr_warmup)
    floor = tc.min_lr_frac * tc.lr
    return floor + (tc.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, tc, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices only; `fused` None = the fused kernel wherever it runs."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel: one pass over each tensor instead of a dozen (bench/overheads.py times both); it takes
    # floating-point parameters on the CPU and CUDA
    if fused is None:
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.99), fused=fused or None)


def setup_model(cfg: Config, device: torch.device, tokenizer=None) -> Algorithm:
    """The algorithm of `cfg` on `device`, with its own tokenizer or `tokenizer` (e.g. an export's files)."""
    if tokenizer is None and cfg.data.tokenizer == "gpt2":
        if cfg.algo in ("ldlm", "tencdm"):
            raise UserError("LDLM tokenises with its frozen LM's own tokenizer; leave data.tokenizer empty "
                            "(data.tokenizer=gpt2 is for the AR/MDLM baselines)")
        from .hubdata import gpt2_tokenizer

        tokenizer = gpt2_tokenizer()
    elif tokenizer is None:
        tokenizer = load_tokenizer(cfg.model.lm)
    model = build(cfg, tokenizer).to(device)
    return model


class Trainer:
    def __init__(self, cfg: Config, out_dir: str, resume: bool = False, quiet: bool = False,
                 command: str | None = None):
        self.cfg, self.out = cfg, Path(out_dir)
        self.setup_s: dict[str, float] = {}  # where start-up time went (logged in the 'start' event)
        t_init = time.time()
        self.command = command  # the command line, logged so that an export's model card can show it
        tc = cfg.train
        check_tracker(tc.tracker)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        want = tc.device if tc.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.dist = du.init(want)
        self.quiet = quiet or os.environ.get("LDLM_QUIET") == "1" or not self.dist.main
        self.device = pick_device(tc.device, self.dist.local_rank)
        # train.bf16 asks for bf16 autocast; a CPU without AMX gets fp32, which is faster there (precision.py)
        self.bf16 = tc.bf16 and native_bf16(self.device)
        self.resume_from = None
        if self.out.exists() and any(self.out.glob("ckpt-*")):
            if not resume:
                raise UserError(f"'{self.out}' already holds checkpoints; pass --resume to continue that run "
                                f"or choose another --out")
            self.resume_from = ck.resolve_checkpoint(self.out)
            check_resume(cfg, self.resume_from)  # refuses what the checkpoint cannot honour; pins the horizon
        self.lock = self._lock() if self.dist.main else None
        try:
            self._setup()
            self.setup_s["total"] = time.time() - t_init
        except BaseException:
            if self.lock is not None:  # a run that failed to start leaves its folder as it found it
                self.lock.release()
            raise

    def _setup(self) -> None:
        cfg, tc = self.cfg, self.cfg.train
        torch.manual_seed(tc.seed)
        self.model = setup_model(cfg, self.device)
        self.micro = tc.batch_size
        self.global_batch = tc.batch_size * tc.grad_accum * self.dist.world_size
        # rank 0 first: it builds (and caches) tokenised data and features; the others then read the caches
        if not self.dist.main:
            du.barrier(self.dist)
        t = time.time()
        self.corpus = load_corpus(cfg.data, self.model.tokenizer, cfg.model.lm)
        self.setup_s["corpus"] = time.time() - t
        # before the feature cache and any step: a corpus too small to train on is refused; one near it is
        # warned about when training starts (a run that fails to start says one thing: why)
        self.corpus_warning = check_corpus_size(cfg.data, tc, len(self.corpus.train), len(self.corpus.valid),
                                                self.dist.world_size)
        # one global batch per optimizer step, identical on every rank; each rank takes its slices
        self.batches = BatchIterator(len(self.corpus.train), self.global_batch, tc.seed)
        t = time.time()
        # LDLM: the frozen LM's features (cached on disk) of the rows this run reads, from step 0 to its end
        # (and the first epoch's order: the normalisation is fitted on its first rows, whatever the run's length)
        rows = {"train": self.batches.rows_within(max(tc.steps, schedule_horizon(tc))),
                "train_order": self.batches.first_epoch(),
                "valid": torch.cat(validation_batches(len(self.corpus.valid), tc.batch_size, tc.eval_batches)
                                   or [torch.zeros(0, dtype=torch.long)])}
        self.model.prepare(self.corpus, self.device, rows)
        self.setup_s["prepare"] = time.time() - t
        if self.dist.main:
            du.barrier(self.dist)
        self.opt = make_optimizer(self.model, tc)
        self.ema = EMA(self.model, tc.ema)
        self.step = 0
        if self.resume_from is not None:
            self._load(self.resume_from)
        self.wrapped: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.wrapped = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.fwd = torch.compile(self.wrapped) if tc.compile else self.wrapped
        self.log_file = None
        self.tracker: Tracker | None = None
        self._signal: int | None = None
        self.bad_in_a_row = 0

    def _lock(self) -> RunLock:
        """One writer per run folder; a lock left by a killed trainer is taken over."""
        lock = RunLock(self.out).acquire()
        if lock.took_over:
            h = lock.took_over
            print(f"note: took over the lock of '{self.out}' from pid {h.get('pid')} on {h.get('host')}, "
                  f"which ended without releasing it", file=sys.stderr)
        return lock

    # -- checkpoints ----------------------------------------------------------------------
    def save(self) -> Path | None:
        if not self.dist.main:
            return None
        opt_tensors, opt_scalars = ck.flatten_optimizer(self.opt.state_dict())
        train_tensors = {**opt_tensors, **{f"extra.{k}": v for k, v in self.model.extra_state().items()},
                         "rng.cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            train_tensors["rng.cuda"] = torch.cuda.get_rng_state()
        state = {"optimizer": opt_scalars, "data": self.batches.state_dict(), "algo": self.cfg.algo,
                 "global_batch": self.global_batch, "world_size": self.dist.world_size,
                 "corpus_fingerprint": self.corpus.fingerprint}
        return ck.save_checkpoint(self.out, self.step, self.cfg, self.model.trainable_state(),
                                  self.ema.state_dict(), train_tensors, state, self.cfg.train.keep_last)

    def _load(self, path: Path) -> None:
        ck.load_into(self.model, ck.load_tensors(path / "model.safetensors"), self.model.trainable_state(),
                     f"checkpoint '{path}'")
        self.ema.load_state_dict(ck.load_tensors(path / "ema.safetensors"), self.model, f"checkpoint '{path}' (EMA)")
        tt = ck.load_tensors(path / "train.safetensors")
        st = ck.load_state_json(path)
        check_corpus(st, self.corpus.fingerprint, self.cfg)
        try:
            self.opt.load_state_dict(ck.unflatten_optimizer(
                {k: v for k, v in tt.items() if k.startswith("optim.")}, st["optimizer"]))
            # the state is matched to parameters by position: a different order or shape must fail here,
            # not as a tensor-size error inside the first optimizer step
            for group in self.opt.param_groups:
                for p in group["params"]:
                    for v in self.opt.state.get(p, {}).values():
                        if torch.is_tensor(v) and v.dim() > 0 and v.shape != p.shape:
                            raise ValueError(f"a state of shape {tuple(v.shape)} for a parameter of shape {tuple(p.shape)}")
        except (KeyError, ValueError, RuntimeError) as e:
            raise UserError(f"checkpoint '{path}' optimizer state does not fit this model ({str(e)[:100]}); "
                            f"it was made with another config") from None
        self.model.load_extra_state({k[len("extra."):]: v for k, v in tt.items() if k.startswith("extra.")})
        torch.set_rng_state(tt["rng.cpu"])
        if "rng.cuda" in tt and torch.cuda.is_available():
            torch.cuda.set_rng_state(tt["rng.cuda"])
        gb = st.get("global_batch", self.global_batch)
        if gb != self.global_batch:
            raise UserError(f"checkpoint '{path}' was trained with a global batch of {gb} sequences, this run has "
                            f"{self.global_batch} (batch_size x processes x grad_accum); keep the global batch "
                            f"to resume exactly")
        self.batches.load_state_dict(st["data"])
        self.step = int(st["step"])

    # -- logging --------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if self.log_file is not None:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()
        if self.tracker is not None:
            try:
                self.tracker.log(record)
            except Exception as e:  # noqa: BLE001 - a tracker's failure must not stop training
                self.tracker = None
                self._warn(f"train.tracker={self.cfg.train.tracker} failed ({type(e).__name__}: {e}); "
                           f"it is off for the rest of the run")

    def _warn(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"warning: {message}", file=sys.stderr)

    def plot(self) -> None:
        """Redraw curves.png / timesteps.png from metrics.jsonl; a failure is logged, never fatal."""
        try:
            plots.plot_training(self.out)
        except Exception as e:  # noqa: BLE001 - plots are a view of metrics.jsonl, which stays intact
            self.log({"step": self.step, "event": "plot_failed", "error": f"{type(e).__name__}: {e}"})
            self._warn(f"plotting failed at step {self.step} ({type(e).__name__}: {e}); training goes on")

    def _open_log(self) -> None:
        path = self.out / "metrics.jsonl"
        if self.resume_from is not None and path.exists():
            # drop what was logged after the checkpoint we resume from: those steps are redone
            keep = []
            for ln in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(ln)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if "event" in rec or rec.get("step", 0) <= self.step:
                    keep.append(ln)
            ck.write_text_atomic(path, "".join(k + "\n" for k in keep))
        self.log_file = open(path, "a", encoding="utf-8")

    @torch.no_grad()
    def validate(self) -> dict:
        tc = self.cfg.train
        self.model.eval()
        g = torch.Generator().manual_seed(1234)
        n = len(self.corpus.valid)
        sums: dict[str, float] = {}
        batches = 0
        with self.ema.swapped_in(self.model), autocast(self.device, self.bf16):
            for idx in validation_batches(n, tc.batch_size, tc.eval_batches):
                out = self.model.evaluate(self.model.get_batch("valid", idx, self.device), g)
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v
                batches += 1
        self.model.train()
        return {k: v / max(1, batches) for k, v in sums.items()}

    # -- signals --------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self._signal = signum

    @contextlib.contextmanager
    def _signals(self):
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    # -- one optimizer step ---------------------------------------------------------------
    def _step(self) -> tuple[dict, float, bool]:
        """Forward/backward over this rank's micro-batches, then (unless non-finite) an update.
        Returns (mean logs of this rank, grad norm, skipped)."""
        tc = self.cfg.train
        rank, A, B = self.dist.rank, tc.grad_accum, self.micro
        rows = self.batches.next()
        extra_before = {k: v.clone() for k, v in self.model.extra_state().items()}
        # what a skipped step restores: the saved buffers (BatchNorm statistics); not the constant ones (the
        # readout's 47 MB copy of the frozen word embeddings, cloned on every step until session 13)
        buffers_before = {n: b.clone() for n, b in ema_buffers(self.model).items()}
        acc: dict = {}  # sums of floats or 0-dim tensors; read once per log interval
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for m in range(A):
            j = rank * A + m
            torch.manual_seed(micro_seed(tc.seed, self.step, j))
            batch = self.model.get_batch("train", rows[j * B:(j + 1) * B], self.device)
            sync = self.dist.enabled and m < A - 1
            with (self.wrapped.no_sync() if sync else contextlib.nullcontext()):
                try:
                    with autocast(self.device, self.bf16):
                        loss, logs = self.fwd(batch, self.step)
                    (loss / A).backward()
                except torch.OutOfMemoryError:
                    raise UserError(
                        f"out of {self.device.type.upper()} memory at step {self.step} with train.batch_size={B} "
                        f"sequences of {self.cfg.data.seq_len} tokens per process (grad_accum={A}); lower "
                        f"train.batch_size and raise train.grad_accum to keep the global batch") from None
            finite = finite & torch.isfinite(loss.detach())
            for k, v in logs.items():
                acc[k] = acc.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v) / A
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip or float("inf"))
        finite = finite & torch.isfinite(gnorm)
        # the step's one host sync: skip on any rank's non-finite loss/gradient, stop on any rank's signal
        flags = torch.stack([(~finite).float(), torch.tensor(1.0 if self._signal is not None else 0.0,
                                                              device=self.device)])
        du.all_reduce_(flags, self.dist, "max")
        skipped = bool(flags[0] > 0)
        if flags[1] > 0 and self._signal is None:
            self._signal = signal.SIGTERM  # another rank was signalled: stop together
        if skipped:
            self.opt.zero_grad(set_to_none=True)
            self.model.load_extra_state(extra_before)
            with torch.no_grad():
                for n, b in ema_buffers(self.model).items():
                    b.copy_(buffers_before[n])
        else:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.ema.update(self.model)
            if self.dist.enabled:  # e.g. the adaptive timestep sampler: identical on every rank
                extra = self.model.extra_state()
                if extra:
                    self.model.load_extra_state(du.average_state_(extra, self.dist))
            self.model.on_optimizer_step()
        return acc, gnorm, skipped

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> dict:
        try:
            with self._signals():
                return self._train()
        except OSError as e:
            if e.errno not in ck.WRITE_ERRNOS:
                raise
            raise ck.write_failed(self.out, f"'{Path(e.filename or 'a file').name}'", e) from None
        finally:
            if self.log_file is not None:
                self.log_file.close()
                self.log_file = None
            if self.tracker is not None:
                try:
                    self.tracker.close()
                except Exception as e:  # noqa: BLE001
                    self._warn(f"train.tracker={self.cfg.train.tracker} did not close cleanly ({e})")
                self.tracker = None
            if self.lock is not None:
                self.lock.release()

    def _train(self) -> dict:
        from tqdm import tqdm

        cfg, tc, main = self.cfg, self.cfg.train, self.dist.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            ck.clean_stale(self.out)
            ck.write_text_atomic(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
            self._open_log()
            self.tracker = open_tracker(tc.tracker, self.out, cfg.to_dict())
        counts = self.model.param_counts()
        self.log({"event": "resume" if self.resume_from is not None else "start", "step": self.step,
                  "algo": cfg.algo, "trainable_params": counts["trainable"], "params": counts,
                  "output_vocab": self.model.output_vocab_size(), "device": str(self.device),
                  "world_size": self.dist.world_size, "global_batch": self.global_batch, "bf16": self.bf16,
                  "train_passages": len(self.corpus.train), "valid_passages": len(self.corpus.valid),
                  **({"corpus_warning": self.corpus_warning} if self.corpus_warning else {}),
                  "time": time.time(), "setup_s": {k: round(v, 2) for k, v in self.setup_s.items()},
                  **({"command": self.command} if self.command else {})})
        if main and self.corpus_warning:
            self._warn(self.corpus_warning)
        if not self.quiet:
            print(f"{cfg.algo}: {format_param_counts(counts)}; output vocabulary {self.model.output_vocab_size():,} "
                  f"tokens; {len(self.corpus.train)} train / "
                  f"{len(self.corpus.valid)} valid passages of {cfg.data.seq_len} tokens; device {self.device}"
                  + (f" x {self.dist.world_size} processes" if self.dist.enabled else "")
                  + f"; global batch {self.global_batch}"
                  + ("; fp32 (train.bf16 asked for bf16, which this CPU emulates: ~50x slower)"
                     if tc.bf16 and not self.bf16 else ""))
        self.wrapped.train()
        tokens_per_step = self.global_batch * cfg.data.seq_len
        bar = tqdm(total=tc.steps, initial=self.step, desc=f"train {cfg.algo}", unit="step",
                   disable=self.quiet, dynamic_ncols=True)
        t_last, step_last = time.time(), self.step
        t0 = time.time()
        last_logs: dict = {}
        val: dict = {}
        saved_at = self.step if self.resume_from is not None else -1
        while self.step < tc.steps:
            lr = lr_at(self.step, tc)
            for group in self.opt.param_groups:
                group["lr"] = lr
            # only the last step of a log interval is logged: the others may skip their costly diagnostics
            self.model.step_logs = (self.step + 1) % tc.log_every == 0 or self.step + 1 == tc.steps
            acc, gnorm, skipped = self._step()
            self.step += 1
            bar.update(1)
            if skipped:
                self.bad_in_a_row += 1
                self.log({"step": self.step, "event": "skipped", "reason": "non-finite loss or gradient",
                          "loss": float(acc["loss"]) if "loss" in acc else None, "in_a_row": self.bad_in_a_row})
                if not self.quiet:
                    tqdm.write(f"step {self.step}: non-finite loss/gradient, step skipped "
                               f"({self.bad_in_a_row} in a row)")
                if self.bad_in_a_row >= tc.max_bad_steps:
                    last = ck.latest_name(self.out)
                    raise UserError(
                        f"training stopped at step {self.step}: {self.bad_in_a_row} steps in a row had a non-finite "
                        f"loss (train.max_bad_steps={tc.max_bad_steps}); "
                        + (f"the last good checkpoint {self.out / last} is intact; " if last else "no checkpoint was "
                           "written; ")
                        + "lower train.lr or set train.bf16=false, then --resume")
            else:
                self.bad_in_a_row = 0
                last_logs = acc
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                acc = {k: float(v) for k, v in acc.items()}
                acc.update(self.model.interval_logs())
                gnorm = float(gnorm)
                logs = du.mean_logs(acc, self.dist, self.device)
                now = time.time()
                tok_s = tokens_per_step * (self.step - step_last) / max(now - t_last, 1e-9)
                t_last, step_last = now, self.step
                self.log({"step": self.step, "lr": lr, "grad_norm": gnorm, "tok_s": tok_s,
                          "elapsed": now - t0, **logs})
                bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", diff=f"{logs.get('diff', 0):.3f}",
                                tok_s=f"{tok_s:.0f}")
            if main and ((tc.eval_every and self.step % tc.eval_every == 0) or self.step == tc.steps):
                val = self.validate()
                self.log({"step": self.step, "split": "valid", **val, **self.model.log_extras()})
                self.plot()
            if ((tc.save_every and self.step % tc.save_every == 0 and not skipped)  # no saves inside a bad streak
                    or self.step == tc.steps):
                self.save()
                saved_at = self.step
            if self._signal is not None:
                if saved_at != self.step:
                    self.save()
                du.barrier(self.dist)
                name = signal.Signals(self._signal).name
                self.log({"step": self.step, "event": "stopped", "signal": name})
                if main:
                    self.plot()
                bar.close()
                raise TrainingInterrupted(
                    f"{name} received: stopped at step {self.step}; checkpoint saved in {self.out}; "
                    f"continue with `ldlm train --out {self.out} --resume`", self._signal)
        bar.close()
        du.barrier(self.dist)
        return {"step": self.step, "train": {k: float(v) for k, v in last_logs.items()}, "valid": val, "wall_s": time.time() - t0}
