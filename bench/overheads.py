"""Fixed costs around the model's own compute, each timed the old way and the way ldlm does it now.

    .venv/bin/python bench/overheads.py --out bench/results/overheads

- evaluator load: SmolLM2's GGUF loaded by transformers as it does it (the file parsed three times, gguf's
  tensor-name map rebuilt per module) against `ldlm.evaluator`'s `_gguf_parsed_once`; each load in a fresh
  process (the page cache is warm after the first).
- AdamW step on `configs/tiny.yaml`'s trainable parameters (random gradients): torch's default (foreach)
  against the fused kernel `trainer.make_optimizer` asks for.
- the skipped-step snapshot at the start of every `Trainer._step`: every non-frozen buffer cloned (the readout's
  47 MB copy of the frozen word embeddings among them) against the saved buffers only (`ema.ema_buffers`).
- the training rows whose frozen-LM features the demo computes, and how many the old normalisation sample (the
  split's first 4,096 rows) added to them (a count, not a time).

Run it on an otherwise idle machine: these are wall-clock times. Writes overheads.json / overheads.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

import benchlib as B  # noqa: E402

LOAD = """
import contextlib, sys, time
import torch
torch.set_num_threads({threads})
import ldlm.evaluator as E
if {old}:
    E._gguf_parsed_once = contextlib.nullcontext
t = time.perf_counter()
E.Evaluator(E.SMOLLM2)
print(time.perf_counter() - t)
"""


def evaluator_load(threads: int, repeats: int) -> dict:
    out = {}
    for name, old in (("transformers as is", True), ("parsed once (ldlm)", False)):
        times = []
        for _ in range(repeats):
            r = subprocess.run([sys.executable, "-c", LOAD.format(threads=threads, old=old)], capture_output=True,
                               text=True, check=True, env={**os.environ, "LDLM_QUIET": "1"})
            times.append(float(r.stdout.strip().splitlines()[-1]))
        out[name] = B.summary(times)
        B.log(f"evaluator load, {name}: median {out[name]['median']:.1f} s over {repeats}")
    return out


def tiny_model():
    """configs/tiny.yaml's LDLM, built (not prepared: the readout's embedding copy is there from the start)."""
    from ldlm.algorithms import build
    from ldlm.config import load_config
    from ldlm.frozen_lm import load_tokenizer

    cfg = load_config(str(B.ROOT / "configs" / "tiny.yaml"), [])
    return cfg, build(cfg, load_tokenizer(cfg.model.lm))


def adamw_step(model, repeats: int) -> dict:
    from ldlm.trainer import make_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    out = {}
    for name, fused in (("foreach (torch's default)", False), ("fused (ldlm)", True)):
        opt = make_optimizer(model, _TC, fused=fused)
        times = B.time_runs(opt.step, "cpu", warmup=2, repeats=repeats)
        out[name] = B.summary(times)
        B.log(f"AdamW step, {name}: median {out[name]['median'] * 1e3:.1f} ms")
    return {"parameters": sum(p.numel() for p in params), **out}


class _TC:
    """The train-config fields make_optimizer reads (tiny's)."""
    lr, weight_decay = 2e-3, 0.01


def snapshot(model, repeats: int) -> dict:
    from ldlm.ema import ema_buffers

    every = {n: b for n, b in model.named_buffers() if not n.startswith("frozen.lm.")}
    saved = ema_buffers(model)
    out = {"bytes_every": sum(b.numel() * b.element_size() for b in every.values()),
           "bytes_saved": sum(b.numel() * b.element_size() for b in saved.values())}
    for name, bufs in (("every non-frozen buffer (before)", every), ("saved buffers (ldlm)", saved)):
        times = B.time_runs(lambda: {n: b.clone() for n, b in bufs.items()}, "cpu", warmup=2, repeats=repeats)
        out[name] = B.summary(times)
        B.log(f"snapshot, {name}: median {out[name]['median'] * 1e3:.2f} ms")
    return out


def feature_rows(cfg) -> dict:
    """Training rows whose frozen-LM features the demo (`configs/tiny.yaml`, seed 0) computes, and how many more the
    old normalisation sample (the split's first NORM_ROWS rows) added."""
    from ldlm.data import BatchIterator, load_corpus
    from ldlm.features import NORM_ROWS
    from ldlm.frozen_lm import load_tokenizer

    n = len(load_corpus(cfg.data, load_tokenizer(cfg.model.lm), cfg.model.lm).train)
    read = BatchIterator(n, cfg.train.batch_size, cfg.train.seed).rows_within(cfg.train.steps)
    extra = int((~torch.isin(torch.arange(min(NORM_ROWS, n)), read)).sum())
    B.log(f"feature rows: {len(read)} of {n} read; the old normalisation sample added {extra}")
    return {"train_rows": n, "rows_read": len(read), "old_norm_sample_extra": extra}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all usable cores)")
    p.add_argument("--load-repeats", type=int, default=3, help="evaluator loads per variant (default 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs of the AdamW step and the snapshot")
    p.add_argument("--out", default=str(B.RESULTS / "overheads"))
    a = p.parse_args(argv)
    threads = B.set_threads(a.threads)
    cfg, model = tiny_model()
    res = {"machine": B.machine_info("cpu"), "threads": threads,
           "evaluator_load_s": evaluator_load(threads, a.load_repeats),
           "adamw_step_s": adamw_step(model, a.repeats), "snapshot_s": snapshot(model, a.repeats),
           "feature_rows": feature_rows(cfg)}
    B.write_report(Path(a.out), "overheads", res, markdown(res))
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {B.describe_machine(m)}; {m['date']}, commit {m['commit']}.", "",
             f"Command: `{m['command']}`", "", "| what | variant | median | IQR | runs |", "|---|---|---|---|---|"]
    for key, what, unit, scale in (("evaluator_load_s", "SmolLM2 evaluator load (fresh process)", "s", 1),
                                   ("adamw_step_s", f"AdamW step, {res['adamw_step_s']['parameters']:,} parameters",
                                    "ms", 1e3),
                                   ("snapshot_s", "skipped-step snapshot of the buffers", "ms", 1e3)):
        for variant, s in res[key].items():
            if isinstance(s, dict):
                lines.append(f"| {what} | {variant} | {s['median'] * scale:.2f} {unit} | "
                             f"{s['q1'] * scale:.2f}–{s['q3'] * scale:.2f} | {s['n']} |")
    snap = res["snapshot_s"]
    fr = res["feature_rows"]
    lines += ["", f"The snapshot copies {snap['bytes_every'] / 1e6:.1f} MB before, {snap['bytes_saved'] / 1e6:.3f} MB now.",
              "", f"Feature rows of the demo (`configs/tiny.yaml`, seed 0): {fr['rows_read']:,} of {fr['train_rows']:,} "
              f"training rows read; the old normalisation sample (the split's first 4,096) added "
              f"{fr['old_norm_sample_extra']:,} more."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
